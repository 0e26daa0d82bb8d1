//! The bearer check and the permission check of every API call: who is
//! calling (401 when nobody we know) and whether its token carries one of the
//! roles the API demands (403).

use tokio::time::Instant;

use super::reply::{Reply, quoted};
use crate::api::jwt::Jws;
use crate::api::route::Api;
use crate::sim::state::{State, TokenInfo, role_bit};

/// The permissions (any one suffices) an API demands (reference §4, D3).
fn required_roles(api: Api) -> u16 {
    match api {
        Api::Action(kind) => role_bit(kind.permission()),
        // Any of the seven action permissions.
        Api::CancelAction => (1 << 7) - 1,
        Api::MachineTags | Api::MachinesTags => role_bit("Machine.ReadWrite.All"),
        Api::LogonUsers => role_bit("User.Read.All"),
        Api::StartInvestigation => role_bit("Alert.ReadWrite.All"),
        Api::HuntingQuery => role_bit(crate::sim::config::GRAPH_HUNTING_ROLE),
        _ => role_bit("Machine.Read.All") | role_bit("Machine.ReadWrite.All"),
    }
}

/// The permissions of [`required_roles`] in words, for the 403's message:
/// the caller must learn which role to grant the app.
fn required_roles_text(api: Api) -> String {
    match api {
        Api::Action(kind) => kind.permission().to_string(),
        Api::CancelAction => "one of the machine action permissions".to_string(),
        Api::MachineTags | Api::MachinesTags => "Machine.ReadWrite.All".to_string(),
        Api::LogonUsers => "User.Read.All".to_string(),
        Api::StartInvestigation => "Alert.ReadWrite.All".to_string(),
        Api::HuntingQuery => crate::sim::config::GRAPH_HUNTING_ROLE.to_string(),
        _ => "Machine.Read.All or Machine.ReadWrite.All".to_string(),
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any
/// case), if that is what the header holds.
pub(super) fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl State {
    /// The 401 and 403 steps of an API call, counted in the stats: the
    /// token of the call when it may go on, else the reply that ends it.
    pub(super) fn authorize(
        &mut self,
        api: Api,
        header: Option<&str>,
        now: Instant,
    ) -> Result<TokenInfo, Reply> {
        let token = match self.authenticate(header, now) {
            Ok(t) => t,
            Err(reply) => {
                self.count(|s| s.unauthorized += 1);
                return Err(reply);
            }
        };
        if token.roles & required_roles(api) == 0 {
            self.count(|s| s.forbidden += 1);
            return Err(Reply::error(
                403,
                "Forbidden",
                format!(
                    "The application does not have the permission this API requires: {}",
                    required_roles_text(api)
                ),
            ));
        }
        Ok(token)
    }

    /// The bearer check (reference D3): 401 for a missing header, another
    /// scheme, an unknown token or an expired one.
    fn authenticate(&self, header: Option<&str>, now: Instant) -> Result<TokenInfo, Reply> {
        let unauthorized = |msg: &str| {
            let mut r = Reply::error(401, "Unauthorized", msg);
            r.www_authenticate = Some("Bearer".to_string());
            r
        };
        let Some(h) = header else {
            return Err(unauthorized("Authorization header is missing"));
        };
        let Some(token) = bearer(h) else {
            return Err(unauthorized("Authorization header is not a Bearer token"));
        };
        let Some(info) = self.tokens.get(token) else {
            if self.multi_tenant()
                && let Some(tid) =
                    Jws::parse(token).ok().and_then(|j| j.claim_str("tid").map(str::to_string))
                && self.tenant_index(&tid).is_none()
            {
                // A token of a tenant without this service: the service
                // knows no such tenant (reference D3: 401).
                return Err(unauthorized(&format!(
                    "The access token was issued for tenant {}, which this service does not serve",
                    quoted(&tid)
                )));
            }
            return Err(unauthorized("The access token is invalid"));
        };
        if now >= info.expires {
            return Err(unauthorized("The access token has expired"));
        }
        // A Graph token (`aud` Graph) is no token of this API.
        if info.service != crate::sim::config::Service::Mde {
            return Err(unauthorized(
                "The access token is invalid: it was issued for another audience",
            ));
        }
        Ok(*info)
    }
}
