//! Credentials and bearer tokens: every way of logging in (a client secret,
//! a certificate, managed identity, workload identity federation, the Azure
//! CLI, a token command, a ready token), and the token cache they all serve.
//!
//! The cache (`cache.rs`) refreshes ahead of expiry and shares one fetch
//! between the tasks of a run; each credential (`credential.rs` and one
//! file per kind) makes the one request or runs the one program that
//! yields a token. No message built here contains a secret or a token.

mod cache;
mod certificate;
mod command;
mod credential;
mod endpoint;
mod error;
mod federated;
mod managed;
mod secret;
mod token;

pub use cache::TokenSource;
pub use certificate::CertificateCredential;
pub use command::{AzureCli, DEFAULT_COMMAND_TIMEOUT, TokenCommand};
pub use credential::Credentials;
pub use error::AuthError;
pub use federated::WorkloadIdentity;
pub use managed::{
    IMDS_DEFAULT_BASE, IdentityEndpoint, ManagedIdentity, UserAssigned, arc_key_dir,
};
pub use secret::Secret;
pub(crate) use secret::{error_chain, scrub};
pub use token::{epoch_now as epoch_seconds, token_permissions};
