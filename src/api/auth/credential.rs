//! How the tool proves who it is: every way of logging in, and for each the
//! one request (or program) that yields a token.

use reqwest::Url;

use super::super::error::ConfigError;
use super::certificate::CertificateCredential;
use super::command::{AzureCli, TokenCommand};
use super::endpoint::{request_token, token_url};
use super::error::AuthError;
use super::federated::WorkloadIdentity;
use super::managed::ManagedIdentity;
use super::secret::Secret;
use super::token::{FetchContext, Fetched};

/// What to check when Entra refuses a client secret.
const SECRET_CHECK: &str =
    "check AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (the secret's value, not its id)";

/// How the tool proves who it is to the API.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// An app registration's id and secret (OAuth2 client credentials grant),
    /// from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET`.
    ClientSecret {
        /// Directory (tenant) id or a verified domain; part of the token URL.
        tenant_id: String,
        /// Application (client) id of the app registration.
        client_id: String,
        /// The app's client secret value.
        client_secret: Secret,
    },
    /// An app registration's certificate (`AZURE_CLIENT_CERTIFICATE_PATH`).
    Certificate(CertificateCredential),
    /// The host's managed identity (IMDS, App Service).
    ManagedIdentity(ManagedIdentity),
    /// A federated token in a file (`AZURE_FEDERATED_TOKEN_FILE`).
    WorkloadIdentity(WorkloadIdentity),
    /// The Azure CLI's signed-in user.
    AzureCli(AzureCli),
    /// A command printing tokens (`MDE_TOKEN_COMMAND`).
    TokenCommand(TokenCommand),
    /// A ready bearer token (`MDE_TOKEN`): used as is, never refreshed.
    Bearer(Secret),
}

impl Credentials {
    /// The `--auth` name of the method.
    pub fn method(&self) -> &'static str {
        match self {
            Credentials::ClientSecret { .. } => "secret",
            Credentials::Certificate(_) => "certificate",
            Credentials::ManagedIdentity(_) => "managed-identity",
            Credentials::WorkloadIdentity(_) => "workload-identity",
            Credentials::AzureCli(_) => "azure-cli",
            Credentials::TokenCommand(_) => "token-command",
            Credentials::Bearer(_) => "token",
        }
    }

    /// The tenant the credentials act in (empty when only the token's
    /// issuer knows: a ready token, a command, managed identity).
    pub fn tenant(&self) -> &str {
        match self {
            Credentials::ClientSecret { tenant_id, .. } => tenant_id,
            Credentials::Certificate(c) => &c.tenant_id,
            Credentials::WorkloadIdentity(w) => &w.tenant_id,
            Credentials::AzureCli(a) => a.tenant_id.as_deref().unwrap_or(""),
            Credentials::ManagedIdentity(_)
            | Credentials::TokenCommand(_)
            | Credentials::Bearer(_) => "",
        }
    }

    /// Who logs in, as far as the configuration says: the client id, the
    /// certificate's thumbprint, the identity.
    pub fn identity(&self) -> String {
        match self {
            Credentials::ClientSecret { client_id, .. } => format!("app {client_id}"),
            Credentials::Certificate(c) => {
                format!("app {} with certificate {}", c.client_id, c.thumbprint())
            }
            Credentials::ManagedIdentity(m) => {
                use super::managed::UserAssigned;
                match &m.identity {
                    Some(UserAssigned::ClientId(id)) => {
                        format!("user-assigned identity {id} via {}", m.shape())
                    }
                    Some(UserAssigned::ObjectId(id)) => {
                        format!("user-assigned identity with object id {id} via {}", m.shape())
                    }
                    Some(UserAssigned::ResourceId(id)) => {
                        format!("user-assigned identity {id} via {}", m.shape())
                    }
                    None => format!("system-assigned identity via {}", m.shape()),
                }
            }
            Credentials::WorkloadIdentity(w) => format!("app {} (federated token)", w.client_id),
            Credentials::AzureCli(_) => "the Azure CLI's signed-in account".to_string(),
            Credentials::TokenCommand(_) => "whoever MDE_TOKEN_COMMAND logs in".to_string(),
            Credentials::Bearer(_) => "the issuer of MDE_TOKEN".to_string(),
        }
    }

    /// True when tokens come from the Entra ID token endpoint.
    pub fn uses_login_endpoint(&self) -> bool {
        matches!(
            self,
            Credentials::ClientSecret { .. }
                | Credentials::Certificate(_)
                | Credentials::WorkloadIdentity(_)
        )
    }

    /// The token endpoint for these credentials, when they use one.
    pub(crate) fn token_url(&self, login_base: &str) -> Option<Result<Url, AuthError>> {
        self.uses_login_endpoint().then(|| token_url(login_base, self.tenant()))
    }

    /// Refuses credentials that cannot work: an empty tenant, client id,
    /// secret or token, an identity endpoint breaking the URL rules.
    pub fn check(&self) -> Result<(), ConfigError> {
        let empty = |what: &'static str, v: &str| {
            if v.trim().is_empty() { Err(ConfigError::MissingCredentials(what)) } else { Ok(()) }
        };
        match self {
            Credentials::ClientSecret { tenant_id, client_id, client_secret } => {
                empty("the tenant id is empty", tenant_id)?;
                empty("the client id is empty", client_id)?;
                empty("the client secret is empty", client_secret.expose())
            }
            Credentials::Certificate(c) => {
                empty("the tenant id is empty", &c.tenant_id)?;
                empty("the client id is empty", &c.client_id)
            }
            Credentials::WorkloadIdentity(w) => {
                empty("the tenant id is empty", &w.tenant_id)?;
                empty("the client id is empty", &w.client_id)
            }
            Credentials::ManagedIdentity(m) => m.check().map_err(ConfigError::UnusableCredentials),
            Credentials::TokenCommand(c) => {
                empty("the token command is empty", &c.command)?;
                if c.timeout.is_zero() {
                    return Err(ConfigError::UnusableCredentials(
                        "the token command's timeout is zero".to_string(),
                    ));
                }
                Ok(())
            }
            Credentials::AzureCli(_) => Ok(()),
            Credentials::Bearer(token) => empty("the bearer token is empty", token.expose()),
        }
    }

    /// One fetch of a token. `url` is the token endpoint for the
    /// credentials that use one. A static bearer is not fetched.
    pub(crate) async fn fetch(
        &self,
        ctx: FetchContext<'_>,
        url: Option<&Url>,
    ) -> Result<Fetched, AuthError> {
        let need_url = || {
            url.ok_or_else(|| AuthError::InvalidEndpoint {
                url: ctx.login_base.to_string(),
                reason: "no token endpoint".to_string(),
            })
        };
        match self {
            Credentials::ClientSecret { client_id, client_secret, .. } => {
                let proof = [("client_secret", client_secret.expose())];
                let secrets = [client_secret.expose()];
                request_token(
                    ctx.http,
                    need_url()?,
                    client_id,
                    &proof,
                    ctx.scope,
                    &secrets,
                    SECRET_CHECK,
                )
                .await
            }
            Credentials::Certificate(c) => c.fetch(ctx, need_url()?).await,
            Credentials::WorkloadIdentity(w) => w.fetch(ctx, need_url()?).await,
            Credentials::ManagedIdentity(m) => m.fetch(ctx).await,
            Credentials::AzureCli(a) => a.fetch(ctx.resource()).await,
            Credentials::TokenCommand(c) => c.fetch(ctx.scope, ctx.resource()).await,
            Credentials::Bearer(token) => Ok(Fetched {
                token: token.clone(),
                lifetime: super::token::lifetime_of(token.expose()),
            }),
        }
    }
}
