//! The seam between the pipeline and the network: the few calls the runner
//! makes, as a trait. The real implementation is [`crate::api::client::Client`];
//! unit tests drive the pipeline in paused time with a scripted one.

use std::future::Future;

use crate::api::action::ActionKind;
use crate::api::client::{ActionBody, CallError, Client, Reply};
use crate::api::model::{Machine, MachineAction, MachineSummary, ODataList};
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

    /// `GET machines` with a query, each entity read into the keys a device
    /// look-up uses. The default cuts [`Transport::list_machines`] down;
    /// the real client parses the reply into summaries directly, so a page
    /// of 10,000 machines never exists as whole entities.
    fn list_machine_summaries(
        &self,
        query: &ListQuery,
    ) -> impl Future<Output = Result<Reply<ODataList<MachineSummary>>, CallError>> + Send {
        async move {
            let reply = self.list_machines(query).await?;
            let ODataList { context, value, next_link } = reply.value;
            let value = value.into_iter().map(MachineSummary::from).collect();
            Ok(Reply { status: reply.status, value: ODataList { context, value, next_link } })
        }
    }

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

    async fn list_machine_summaries(
        &self,
        query: &ListQuery,
    ) -> Result<Reply<ODataList<MachineSummary>>, CallError> {
        Client::list_machine_summaries(self, query).await
    }

    async fn cancel_action(
        &self,
        action_id: &str,
        comment: Option<&str>,
    ) -> Result<Reply<MachineAction>, CallError> {
        Client::cancel_action(self, action_id, comment).await
    }
}
