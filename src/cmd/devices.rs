//! `mdebulk devices`: the tenant's devices with their containment now,
//! written as a report that is also a run input, and its summary (a line
//! of text, or one JSON object under `--summary json`).

use crate::cli::{Clients, DevicesArgs, devices_config};
use crate::run::devices::DevicesReport;

use super::shared::{connect, connect_tenants};

/// `mdebulk devices`.
pub(crate) async fn devices(
    args: &DevicesArgs,
    env: &dyn Fn(&str) -> Option<String>,
    json: bool,
) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    let (config, clients) = devices_config(args, env)?;
    let (r, failed) = match clients {
        Clients::One(client_config) => {
            let (client, stop) = connect(*client_config)?;
            (crate::run::devices::devices(&config, client, stop).await?, Vec::new())
        }
        Clients::Tenants(_, tenants) => {
            let (sides, stop) = connect_tenants(tenants)?;
            crate::run::tenants::devices(&config, sides, stop).await?
        }
    };
    // A tenant that could not be read is missing from the report: exit 2.
    let code = if failed.is_empty() { 0 } else { 2 };
    for (tenant, why) in &failed {
        eprintln!("error: tenant {tenant}: not in the report: {why}");
    }
    let output = config.output.as_ref().map(|p| p.display().to_string());
    if json {
        let mut object = summary_json(&r, output.as_deref(), started.elapsed());
        if !failed.is_empty() {
            object["exit_code"] = code.into();
            object["failed_tenants"] = failed
                .iter()
                .map(|(t, why)| (t.clone(), serde_json::Value::from(why.clone())))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        // The report itself may be on standard output.
        match output {
            Some(_) => println!("{object}"),
            None => eprintln!("{object}"),
        }
    } else {
        eprintln!(
            "{} of {} devices listed; {} isolated, {} restricted now (from {} completed containment actions)",
            r.listed, r.machines, r.isolated, r.restricted, r.actions
        );
    }
    Ok(code)
}

/// The JSON summary of a report: `command`, the counts, `elapsed_seconds`,
/// where the report went (`output`, `null`: standard output) and
/// `exit_code`, with the same keys a run's summary uses where they mean
/// the same thing.
fn summary_json(
    r: &DevicesReport,
    output: Option<&str>,
    elapsed: std::time::Duration,
) -> serde_json::Value {
    serde_json::json!({
        "command": "devices",
        "machines": r.machines,
        "listed": r.listed,
        "isolated": r.isolated,
        "restricted": r.restricted,
        "containment_actions": r.actions,
        "elapsed_seconds": elapsed.as_secs_f64(),
        "output": output,
        "exit_code": 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_summary_names_the_counts_and_where_the_report_went() {
        let r = DevicesReport { machines: 9, listed: 2, isolated: 2, restricted: 1, actions: 5 };
        let v = summary_json(&r, Some("iso.csv"), std::time::Duration::from_millis(1500));
        assert_eq!(v["command"], "devices");
        assert_eq!((v["machines"].as_u64(), v["listed"].as_u64()), (Some(9), Some(2)));
        assert_eq!(v["isolated"], 2);
        assert_eq!(v["restricted"], 1);
        assert_eq!(v["containment_actions"], 5);
        assert_eq!(v["output"], "iso.csv");
        assert_eq!(v["exit_code"], 0);
        assert_eq!(
            summary_json(&r, None, std::time::Duration::ZERO)["output"],
            serde_json::Value::Null
        );
    }
}
