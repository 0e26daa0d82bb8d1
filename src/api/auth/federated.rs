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
