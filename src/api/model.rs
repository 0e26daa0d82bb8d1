//! Wire types of the API: the MachineAction and Machine entities (and the
//! slim [`MachineSummary`] that device look-ups read), OData list replies,
//! and the error envelope.
//!
//! They are written to read what the real service sends (documentation
//! subsets, nulls nearly everywhere, unknown extra keys, `lastUpdateTimeUtc` as
//! an old spelling) and to be emitted by the simulator with every key in the
//! real order. Enum-like fields stay strings, so a value the documentation does
//! not list is kept instead of failing the whole reply.

use serde::{Deserialize, Serialize};

/// A MachineAction: what the API returns for every action request, and the
/// rows of `GET /api/machineactions`.
///
/// Field order is the real service's order; the simulator serialises it with
/// `@odata.context` in front (see [`Entity`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineAction {
    /// Action id, a GUID.
    pub id: String,
    /// `Isolate`, `Unisolate`, `StopAndQuarantineFile`, ... (kept as text: see module docs).
    #[serde(rename = "type")]
    pub kind: String,
    /// Null on actions created through the API.
    #[serde(default)]
    pub title: Option<String>,
    /// The app's display name, or a user's UPN.
    #[serde(default)]
    pub requestor: Option<String>,
    /// The request's `Comment`.
    #[serde(default)]
    pub requestor_comment: Option<String>,
    /// `Pending`, `InProgress`, `Succeeded`, `Failed`, `TimeOut`, `Cancelled`.
    pub status: String,
    /// The target device.
    pub machine_id: String,
    /// The target device's name, as MDE knows it.
    #[serde(default)]
    pub computer_dns_name: Option<String>,
    /// When the action was created (ISO-8601 UTC, 7 fractional digits).
    #[serde(default)]
    pub creation_date_time_utc: Option<String>,
    /// Last status change; documentation examples spell it `lastUpdateTimeUtc`.
    #[serde(default, alias = "lastUpdateTimeUtc")]
    pub last_update_date_time_utc: Option<String>,
    /// Who cancelled the action, once cancelled.
    #[serde(default)]
    pub cancellation_requestor: Option<String>,
    /// The cancel request's comment.
    #[serde(default)]
    pub cancellation_comment: Option<String>,
    /// When it was cancelled.
    #[serde(default)]
    pub cancellation_date_time_utc: Option<String>,
    /// 0 on fresh actions; non-zero when the device reported a failure.
    #[serde(default)]
    pub error_h_result: Option<i64>,
    /// IsolationType for isolate, ScanType for scans, else null.
    #[serde(default)]
    pub scope: Option<String>,
    /// Caller-supplied external id (unused by the API today).
    #[serde(default)]
    pub external_id: Option<String>,
    /// `PublicApi` for actions created through the API.
    #[serde(default)]
    pub request_source: Option<String>,
    /// The file of a StopAndQuarantineFile action.
    #[serde(default)]
    pub related_file_info: Option<RelatedFileInfo>,
    /// Live response commands; empty otherwise.
    #[serde(default)]
    pub commands: Option<Vec<serde_json::Value>>,
    /// Undocumented; always null in captures.
    #[serde(default)]
    pub troubleshoot_info: Option<serde_json::Value>,
}

impl MachineAction {
    /// True once the action can no longer change: Succeeded, Failed, TimeOut or Cancelled.
    pub fn is_final(&self) -> bool {
        is_final_status(&self.status)
    }
}

/// True for the MachineAction statuses that never change again.
pub fn is_final_status(status: &str) -> bool {
    matches!(status, "Succeeded" | "Failed" | "TimeOut" | "Cancelled")
}

/// `relatedFileInfo` of a MachineAction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelatedFileInfo {
    /// The hash itself.
    pub file_identifier: String,
    /// `Sha1`, `Sha256` or `Md5`.
    pub file_identifier_type: String,
}

/// A Machine entity (the keys this tool and its simulator use, plus any
/// others kept verbatim in `extra`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    /// Machine id, 40 hex digits.
    pub id: String,
    /// Usually the FQDN, sometimes a bare name; lowercase in every sample.
    #[serde(default)]
    pub computer_dns_name: Option<String>,
    /// First time MDE saw the device.
    #[serde(default)]
    pub first_seen: Option<String>,
    /// Last time MDE heard from the device; decides between re-imaged twins.
    #[serde(default)]
    pub last_seen: Option<String>,
    /// `Windows10`, `Windows11`, `WindowsServer2019`, `Linux`, `macOS`, ...
    #[serde(default)]
    pub os_platform: Option<String>,
    /// `Active`, `Inactive`, `ImpairedCommunication`, ...
    #[serde(default)]
    pub health_status: Option<String>,
    /// Entra ID device id, when the device is joined.
    #[serde(default)]
    pub aad_device_id: Option<String>,
    /// Last internal IP address.
    #[serde(default)]
    pub last_ip_address: Option<String>,
    /// Every other key of the entity, in the order received.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Machine {
    /// True when the API refuses Windows-only actions on this device.
    pub fn is_linux_or_macos(&self) -> bool {
        let os = self.os_platform.as_deref().unwrap_or("").to_ascii_lowercase();
        os.starts_with("linux") || os.starts_with("macos")
    }
}

/// The keys of a Machine entity a device look-up reads, and no others:
/// what `GET machines` listing pages are read into.
///
/// A page holds up to 10,000 entities. Read as [`Machine`], each would
/// first buffer every key (serde's `flatten` collects the whole object to
/// fill `extra`) and then keep the unused ones, only for the look-up to
/// drop them; here the parser skips unknown keys as it meets them, straight
/// from the reply's bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineSummary {
    /// Machine id, 40 hex digits: what an action is sent to.
    pub id: String,
    /// Matched against device names.
    #[serde(default)]
    pub computer_dns_name: Option<String>,
    /// Orders re-imaged twins (most recently seen first).
    #[serde(default)]
    pub last_seen: Option<String>,
    /// Decides whether Windows-only actions can be sent.
    #[serde(default)]
    pub os_platform: Option<String>,
    /// Shown beside each candidate of an ambiguous name.
    #[serde(default)]
    pub health_status: Option<String>,
    /// Matched against Entra ID device ids.
    #[serde(default)]
    pub aad_device_id: Option<String>,
    /// Matched against IP addresses.
    #[serde(default)]
    pub last_ip_address: Option<String>,
    /// Matched against a protected-devices policy's `tags`.
    #[serde(default)]
    pub machine_tags: Option<Vec<String>>,
    /// Matched against a protected-devices policy's `groups`.
    #[serde(default)]
    pub rbac_group_name: Option<String>,
    /// Matched against a protected-devices policy's `device_values`.
    #[serde(default)]
    pub device_value: Option<String>,
}

impl From<Machine> for MachineSummary {
    fn from(m: Machine) -> Self {
        let text = |key: &str| m.extra.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let machine_tags = m
            .extra
            .get("machineTags")
            .and_then(|v| v.as_array())
            .map(|tags| tags.iter().filter_map(|t| t.as_str().map(str::to_string)).collect());
        let (rbac_group_name, device_value) = (text("rbacGroupName"), text("deviceValue"));
        MachineSummary {
            machine_tags,
            rbac_group_name,
            device_value,
            id: m.id,
            computer_dns_name: m.computer_dns_name,
            last_seen: m.last_seen,
            os_platform: m.os_platform,
            health_status: m.health_status,
            aad_device_id: m.aad_device_id,
            last_ip_address: m.last_ip_address,
        }
    }
}

/// An OData collection reply: `{"@odata.context": ..., "value": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ODataList<T> {
    /// `<base>/api/$metadata#MachineActions` or `...#Machines`.
    #[serde(rename = "@odata.context", default)]
    pub context: Option<String>,
    /// The page of entities.
    pub value: Vec<T>,
    /// Link to the next page, when the service pages the reply.
    #[serde(rename = "@odata.nextLink", default, skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// A single entity with its `@odata.context` in front, as the service sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity<T> {
    /// `<base>/api/$metadata#MachineActions/$entity`.
    #[serde(rename = "@odata.context", default)]
    pub context: Option<String>,
    /// The entity itself.
    #[serde(flatten)]
    pub value: T,
}

/// Microsoft Graph's `huntingQueryResults`, the reply of
/// `POST security/runHuntingQuery` (addendum §3.1): the columns, then the
/// rows, each keyed by the KQL column names verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HuntingQueryResults {
    /// `…/$metadata#microsoft.graph.security.huntingQueryResults`.
    #[serde(rename = "@odata.context", default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The result's columns, in order.
    #[serde(default)]
    pub schema: Vec<HuntingColumn>,
    /// The rows: column name → value (strings, numbers, booleans, nulls).
    #[serde(default)]
    pub results: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// One column of a hunting result (`singlePropertySchema`). The
/// documentation's last example writes `Name`/`Type`; both casings are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HuntingColumn {
    /// The column's name, as the query's result names it.
    #[serde(alias = "Name")]
    pub name: String,
    /// `String`, `DateTime`, `Int64`, `Boolean`, ...
    #[serde(rename = "type", alias = "Type", default)]
    pub kind: String,
}

/// Microsoft Graph's error envelope:
/// `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`.
/// Clients read it as [`ErrorEnvelope`] (its `code` and `message`); the
/// simulator writes it whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphErrorEnvelope {
    /// The error proper.
    pub error: GraphErrorBody,
}

/// Body of Graph's error envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphErrorBody {
    /// `BadRequest`, `InvalidAuthenticationToken`, `Forbidden`, `TooManyRequests`, ...
    pub code: String,
    /// Human text.
    pub message: String,
    /// The request's date and ids, to quote to Microsoft support.
    #[serde(rename = "innerError")]
    pub inner_error: GraphInnerError,
}

/// `innerError` of Graph's envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphInnerError {
    /// When the error happened (ISO 8601, UTC, seconds).
    pub date: String,
    /// The request's id.
    #[serde(rename = "request-id")]
    pub request_id: String,
    /// The id the client sent, or the request's.
    #[serde(rename = "client-request-id")]
    pub client_request_id: String,
}

impl GraphErrorEnvelope {
    /// An envelope dated `date` with a fresh request id.
    pub fn new(code: &str, message: impl Into<String>, date: String) -> Self {
        let id = new_guid();
        GraphErrorEnvelope {
            error: GraphErrorBody {
                code: code.to_string(),
                message: message.into(),
                inner_error: GraphInnerError {
                    date,
                    request_id: id.clone(),
                    client_request_id: id,
                },
            },
        }
    }
}

/// The API's error envelope: `{"error":{"code","message","target"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// The error proper.
    pub error: ApiErrorBody,
}

/// Body of the error envelope. Clients branch on `code`, never on `message`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// `InvalidRequestBody`, `ResourceNotFound`, `TooManyRequests`, ...
    pub code: String,
    /// Human text; its wording may change.
    #[serde(default)]
    pub message: String,
    /// Correlation id to quote to Microsoft support.
    #[serde(default)]
    pub target: Option<String>,
}

impl ErrorEnvelope {
    /// Builds an envelope with a fresh correlation id.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorEnvelope {
            error: ApiErrorBody {
                code: code.to_string(),
                message: message.into(),
                target: Some(new_guid()),
            },
        }
    }
}

/// The token endpoint's reply. `expires_in` comes as a number from the v2
/// endpoint and as a string from the v1 endpoint; both are accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// `Bearer`.
    #[serde(default)]
    pub token_type: Option<String>,
    /// Lifetime in seconds.
    #[serde(deserialize_with = "number_or_string")]
    pub expires_in: u64,
    /// Extended lifetime (0 in samples).
    #[serde(default, deserialize_with = "opt_number_or_string")]
    pub ext_expires_in: Option<u64>,
    /// The bearer token. Never log it.
    pub access_token: String,
}

fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(u64),
        Str(String),
    }
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Ok(n),
        NumOrStr::Str(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

fn opt_number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    number_or_string(d).map(Some)
}

/// A random lowercase GUID (`8-4-4-4-12` hex), as the service uses for ids
/// and error targets.
pub fn new_guid() -> String {
    // Version 4 (random) with the RFC 4122 variant, like the service's ids.
    let v = fastrand::u128(..);
    let v = (v & !(0xF << 76)) | (0x4 << 76);
    let v = (v & !(0x3 << 62)) | (0x2 << 62);
    let h = format!("{v:032x}");
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn reads_the_real_offboard_reply_and_the_doc_example() {
        let real: Entity<MachineAction> =
            serde_json::from_str(&fixture("machineaction-offboard-201.json")).unwrap();
        assert_eq!(real.value.kind, "Offboard");
        assert_eq!(real.value.status, "Pending");
        assert_eq!(real.value.error_h_result, Some(0));
        assert_eq!(real.value.request_source.as_deref(), Some("PublicApi"));
        let doc: Entity<MachineAction> =
            serde_json::from_str(&fixture("machineaction-doc-example.json")).unwrap();
        assert_eq!(doc.value.scope.as_deref(), Some("Selective"));
        assert!(doc.value.is_final());
    }

    #[test]
    fn reads_graph_hunting_results_in_both_schema_casings() {
        for name in
            ["graph-runhuntingquery-200.json", "graph-runhuntingquery-200-pascalschema.json"]
        {
            let r: HuntingQueryResults = serde_json::from_str(&fixture(name)).unwrap();
            let names: Vec<&str> = r.schema.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names, ["Timestamp", "FileName", "InitiatingProcessFileName"], "{name}");
            assert_eq!(r.schema[0].kind, "DateTime", "{name}");
            assert_eq!(r.results.len(), 2, "{name}");
            assert!(r.results[0]["FileName"].is_string(), "{name}");
        }
        // Graph's envelope reads as the API's: code and message.
        let graph = GraphErrorEnvelope::new("BadRequest", "no", "2026-12-02T00:00:00Z".into());
        let text = serde_json::to_string(&graph).unwrap();
        assert!(text.contains("\"innerError\":{\"date\"") && text.contains("\"request-id\""));
        let read: ErrorEnvelope = serde_json::from_str(&text).unwrap();
        assert_eq!((read.error.code.as_str(), read.error.message.as_str()), ("BadRequest", "no"));
    }

    #[test]
    fn reads_lists_errors_and_tokens() {
        let list: ODataList<MachineAction> =
            serde_json::from_str(&fixture("machineactions-list.json")).unwrap();
        assert_eq!(list.value.len(), 2);
        let saq = &list.value[1];
        assert_eq!(saq.related_file_info.as_ref().unwrap().file_identifier_type, "Sha1");
        let machines: ODataList<Machine> =
            serde_json::from_str(&fixture("machines-list.json")).unwrap();
        assert_eq!(machines.value[0].computer_dns_name.as_deref(), Some("mymachine1.contoso.com"));
        assert_eq!(machines.value[0].extra["rbacGroupId"], 140);
        let summaries: ODataList<MachineSummary> =
            serde_json::from_str(&fixture("machines-list.json")).unwrap();
        assert_eq!(summaries.value.len(), machines.value.len());
        assert_eq!(summaries.value[0], MachineSummary::from(machines.value[0].clone()));
        let err: ErrorEnvelope =
            serde_json::from_str(&fixture("error-resourcenotfound.json")).unwrap();
        assert_eq!(err.error.code, "ResourceNotFound");
        let tok: TokenResponse = serde_json::from_str(&fixture("token-response.json")).unwrap();
        assert_eq!(tok.expires_in, 3599);
        let v1: TokenResponse = serde_json::from_str(
            r#"{"token_type":"Bearer","expires_in":"3599","ext_expires_in":"0","expires_on":"1","access_token":"x"}"#,
        )
        .unwrap();
        assert_eq!(v1.expires_in, 3599);
    }

    #[test]
    fn old_spelling_of_last_update_is_accepted() {
        let a: MachineAction = serde_json::from_str(
            r#"{"id":"1","type":"Isolate","status":"Pending","machineId":"m","lastUpdateTimeUtc":"2019-01-02T14:40:44.6596267Z","somethingNew":1}"#,
        )
        .unwrap();
        assert!(a.last_update_date_time_utc.is_some());
    }

    #[test]
    fn guid_shape() {
        let g = new_guid();
        assert_eq!(g.len(), 36);
        assert_eq!(g.matches('-').count(), 4);
        assert_eq!(&g[14..15], "4");
        assert!(matches!(&g[19..20], "8" | "9" | "a" | "b"));
    }
}
