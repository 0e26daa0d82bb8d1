//! Workload identity federation: a token another issuer gave this workload
//! (a Kubernetes service account, a GitHub Actions OIDC token), read from
//! `AZURE_FEDERATED_TOKEN_FILE`, is traded for an access token as a client
//! assertion. No secret exists anywhere.
//!
//! The file is read again on every fetch: its writer rotates it (AKS every
//! hour or so), and a cached copy would expire with the run still going.

use std::path::PathBuf;

use reqwest::Url;

use super::endpoint::{JWT_BEARER, request_token};
use super::error::AuthError;
use super::token::{FetchContext, Fetched};

/// What to check when Entra refuses the federated token.
const CHECK: &str = "check AZURE_CLIENT_ID and the app's federated credential (issuer, subject and audience api://AzureADTokenExchange must match the token in AZURE_FEDERATED_TOKEN_FILE)";

/// A workload identity: the app and the file its federated token is in.
#[derive(Debug, Clone)]
pub struct WorkloadIdentity {
    /// Directory (tenant) id: part of the token URL.
    pub tenant_id: String,
    /// Application (client) id, or the user-assigned identity's client id.
    pub client_id: String,
    /// The file the federated token is (re)written to.
    pub token_file: PathBuf,
}

impl WorkloadIdentity {
    /// The federated token as the file holds it now.
    fn read_token(&self) -> Result<String, AuthError> {
        let unusable = |message: String| AuthError::Credential {
            method: "workload-identity",
            message,
            transient: false,
        };
        let text = std::fs::read_to_string(&self.token_file).map_err(|e| {
            unusable(format!(
                "cannot read AZURE_FEDERATED_TOKEN_FILE {}: {e}",
                self.token_file.display()
            ))
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(unusable(format!(
                "AZURE_FEDERATED_TOKEN_FILE {} is empty",
                self.token_file.display()
            )));
        }
        Ok(token.to_string())
    }

    /// One token request with the file's current token.
    pub(crate) async fn fetch(
        &self,
        ctx: FetchContext<'_>,
        url: &Url,
    ) -> Result<Fetched, AuthError> {
        let assertion = self.read_token()?;
        let proof = [("client_assertion_type", JWT_BEARER), ("client_assertion", &assertion)];
        request_token(ctx.http, url, &self.client_id, &proof, ctx.scope, &[&assertion], CHECK).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::{Form, State};
    use axum::routing::post;

    /// The forms the token endpoint was sent.
    type Forms = Arc<Mutex<Vec<Vec<(String, String)>>>>;

    #[tokio::test]
    async fn the_token_file_is_read_again_on_every_fetch() {
        let seen: Forms = Arc::default();
        async fn token(
            State(seen): State<Forms>,
            Form(form): Form<Vec<(String, String)>>,
        ) -> axum::Json<serde_json::Value> {
            seen.lock().unwrap().push(form);
            axum::Json(
                serde_json::json!({"access_token": "tok", "expires_in": 3599, "token_type": "Bearer"}),
            )
        }
        let router = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let base = format!("http://{addr}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "federated-one\n").unwrap();
        let wi = WorkloadIdentity {
            tenant_id: "t".into(),
            client_id: "c".into(),
            token_file: file.clone(),
        };
        let http = reqwest::Client::new();
        let ctx = FetchContext { http: &http, login_base: &base, scope: "s/.default" };
        let url = super::super::endpoint::token_url(&base, "t").unwrap();
        wi.fetch(ctx, &url).await.unwrap();
        std::fs::write(&file, "federated-two").unwrap();
        wi.fetch(ctx, &url).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        let get = |form: &Vec<(String, String)>, k: &str| {
            form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        assert_eq!(get(&seen[0], "client_assertion").as_deref(), Some("federated-one"));
        assert_eq!(get(&seen[1], "client_assertion").as_deref(), Some("federated-two"));
        assert_eq!(get(&seen[0], "client_assertion_type").as_deref(), Some(JWT_BEARER));
        assert_eq!(get(&seen[0], "grant_type").as_deref(), Some("client_credentials"));
        assert_eq!(get(&seen[0], "client_id").as_deref(), Some("c"));
        assert_eq!(get(&seen[0], "scope").as_deref(), Some("s/.default"));

        std::fs::write(&file, "  ").unwrap();
        let err = wi.fetch(ctx, &url).await.unwrap_err();
        assert!(err.to_string().contains("is empty") && !err.is_transient(), "{err}");
    }
}
