//! The seam between the pipeline and the network: the few calls the runner
//! makes, as a trait. The real implementation is [`crate::api::client::Client`];
//! unit tests drive the pipeline in paused time with a scripted one.

use std::future::Future;

use crate::api::action::ActionKind;
use crate::api::client::{ActionBody, CallError, Client, Reply};
use crate::api::model::{Machine, MachineAction, ODataList};
use crate::api::odata::ListQuery;

/// What the pipeline needs from the API: one attempt per call, no retries,
/// no pacing (the pipeline owns both).
pub trait Transport: Send + Sync + 'static {
    /// Makes sure credentials work (fetches a token) before any row is
    /// sent, so a bad secret stops the run with one clear error.
    fn authenticate(&self) -> impl Future<Output = Result<(), String>> + Send;

    /// `POST machines/{id}/{action}`.
    fn submit(
        &self,
        machine_id: &str,
        action: ActionKind,
        body: &ActionBody,
    ) -> impl Future<Output = Result<Reply<MachineAction>, CallError>> + Send;

    /// `GET machineactions` with a query.
    fn list_actions(
        &self,
        query: &ListQuery,
    ) -> impl Future<Output = Result<Reply<ODataList<MachineAction>>, CallError>> + Send;

    /// `GET machines` with a query.
    fn list_machines(
        &self,
        query: &ListQuery,
    ) -> impl Future<Output = Result<Reply<ODataList<Machine>>, CallError>> + Send;

    /// `POST machineactions/{id}/cancel`.
    fn cancel_action(
        &self,
        action_id: &str,
        comment: Option<&str>,
    ) -> impl Future<Output = Result<Reply<MachineAction>, CallError>> + Send;
}

impl Transport for Client {
    async fn authenticate(&self) -> Result<(), String> {
        self.tokens().bearer().await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn submit(
        &self,
        machine_id: &str,
        action: ActionKind,
        body: &ActionBody,
    ) -> Result<Reply<MachineAction>, CallError> {
        Client::submit(self, machine_id, action, body).await
    }

    async fn list_actions(
        &self,
        query: &ListQuery,
    ) -> Result<Reply<ODataList<MachineAction>>, CallError> {
        Client::list_actions(self, query).await
    }

    async fn list_machines(
        &self,
        query: &ListQuery,
    ) -> Result<Reply<ODataList<Machine>>, CallError> {
        Client::list_machines(self, query).await
    }

    async fn cancel_action(
        &self,
        action_id: &str,
        comment: Option<&str>,
    ) -> Result<Reply<MachineAction>, CallError> {
        Client::cancel_action(self, action_id, comment).await
    }
}
