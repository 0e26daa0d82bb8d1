//! The seam between the pipeline and the network: the few calls the runner
//! makes, as a trait. The real implementation is [`crate::api::client::Client`];
//! unit tests drive the pipeline in paused time with a scripted one.

use std::future::Future;

use crate::api::action::ActionKind;
use crate::api::auth::AuthError;
use crate::api::client::{ActionBody, CallError, Client, Reply};
use crate::api::model::{HuntingQueryResults, Machine, MachineAction, MachineSummary, ODataList};
use crate::api::odata::ListQuery;

/// What the pipeline needs from the API: one attempt per call, no retries,
/// no pacing (the pipeline owns both).
pub trait Transport: Send + Sync + 'static {
    /// Makes sure credentials work (fetches a token) before any row is
    /// sent, so a bad secret stops the run with one clear error.
    fn authenticate(&self) -> impl Future<Output = Result<(), AuthError>> + Send;

    /// The permissions the token carries, when it says (a JWT's `roles`
    /// and `scp`); `None` when only the API can tell.
    fn permissions(&self) -> impl Future<Output = Option<Vec<String>>> + Send {
        async { None }
    }

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

    /// `GET machines/findbytag`: the machines with a tag (or a tag
    /// starting with it).
    fn find_by_tag(
        &self,
        tag: &str,
        starts_with: bool,
    ) -> impl Future<Output = Result<Reply<ODataList<Machine>>, CallError>> + Send;

    /// `GET files/{sha1}/machines`: the machines that have seen a file.
    fn file_machines(
        &self,
        sha1: &str,
    ) -> impl Future<Output = Result<Reply<ODataList<Machine>>, CallError>> + Send;

    /// `POST machines/AddOrRemoveTagForMultipleMachines`: adds (`add`) or
    /// removes the tag `value` on up to 500 machines.
    fn tag_machines(
        &self,
        value: &str,
        add: bool,
        machine_ids: &[String],
    ) -> impl Future<Output = Result<Reply<serde::de::IgnoredAny>, CallError>> + Send;

    /// `POST machineactions/{id}/cancel`.
    fn cancel_action(
        &self,
        action_id: &str,
        comment: Option<&str>,
    ) -> impl Future<Output = Result<Reply<MachineAction>, CallError>> + Send;

    /// Microsoft Graph's `POST security/runHuntingQuery`.
    fn hunting_query(
        &self,
        kql: &str,
    ) -> impl Future<Output = Result<Reply<HuntingQueryResults>, CallError>> + Send;
}

impl Transport for Client {
    async fn authenticate(&self) -> Result<(), AuthError> {
        self.tokens().bearer().await.map(|_| ())
    }

    async fn permissions(&self) -> Option<Vec<String>> {
        self.tokens().permissions().await.ok().flatten()
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

    async fn find_by_tag(
        &self,
        tag: &str,
        starts_with: bool,
    ) -> Result<Reply<ODataList<Machine>>, CallError> {
        Client::find_by_tag(self, tag, starts_with).await
    }

    async fn file_machines(&self, sha1: &str) -> Result<Reply<ODataList<Machine>>, CallError> {
        Client::file_machines(self, sha1).await
    }

    async fn cancel_action(
        &self,
        action_id: &str,
        comment: Option<&str>,
    ) -> Result<Reply<MachineAction>, CallError> {
        Client::cancel_action(self, action_id, comment).await
    }

    async fn hunting_query(&self, kql: &str) -> Result<Reply<HuntingQueryResults>, CallError> {
        Client::run_hunting_query(self, kql).await
    }

    async fn tag_machines(
        &self,
        value: &str,
        add: bool,
        machine_ids: &[String],
    ) -> Result<Reply<serde::de::IgnoredAny>, CallError> {
        Client::tag_machines(self, value, add, machine_ids).await
    }
}

/// One scripted [`Transport`] for the engine's unit tests, as hyperfine's
/// `MockExecutor` is for its benchmarks: each kind of call answers from a
/// handler the test sets (a closure over whatever state it scripts), every
/// call is counted by kind, and a call of a kind the test did not expect
/// fails the test. No sockets: the tests run in tokio's paused time.
#[cfg(test)]
pub(crate) mod scripted {
    use std::sync::Mutex;

    use super::*;

    /// A handler for one kind of call.
    type Handler<A, R> = Box<dyn Fn(A) -> Result<Reply<R>, CallError> + Send + Sync>;

    /// A tag call's value, whether it adds, and its machines.
    type TagCall = (String, bool, Vec<String>);

    /// The scripted service.
    #[derive(Default)]
    pub(crate) struct Scripted {
        /// Answers to the first token requests, in order; then success.
        auth: Mutex<std::collections::VecDeque<AuthError>>,
        submit: Option<Handler<(String, ActionKind), MachineAction>>,
        list_actions: Option<Handler<ListQuery, ODataList<MachineAction>>>,
        cancel: Option<Handler<String, MachineAction>>,
        hunting: Option<Handler<String, HuntingQueryResults>>,
        tags: Option<Handler<TagCall, serde::de::IgnoredAny>>,
        /// Every call, in order: its kind and, for lists, the filter.
        calls: Mutex<Vec<(&'static str, String)>>,
    }

    impl Scripted {
        /// A service that expects no call at all.
        pub(crate) fn new() -> Scripted {
            Scripted::default()
        }

        /// Fails the next token requests with `errors`, in order.
        pub(crate) fn failing_auth(self, errors: impl IntoIterator<Item = AuthError>) -> Scripted {
            self.auth.lock().unwrap().extend(errors);
            self
        }

        /// Answers `POST machines/{id}/{action}` with `f(machine_id, action)`.
        pub(crate) fn on_submit(
            mut self,
            f: impl Fn(&str, ActionKind) -> Result<Reply<MachineAction>, CallError>
            + Send
            + Sync
            + 'static,
        ) -> Scripted {
            self.submit = Some(Box::new(move |(m, a)| f(&m, a)));
            self
        }

        /// Answers `GET machineactions` with `f(query)`.
        pub(crate) fn on_list_actions(
            mut self,
            f: impl Fn(ListQuery) -> Result<Reply<ODataList<MachineAction>>, CallError>
            + Send
            + Sync
            + 'static,
        ) -> Scripted {
            self.list_actions = Some(Box::new(f));
            self
        }

        /// Answers `POST machineactions/{id}/cancel` with `f(action_id)`.
        pub(crate) fn on_cancel(
            mut self,
            f: impl Fn(&str) -> Result<Reply<MachineAction>, CallError> + Send + Sync + 'static,
        ) -> Scripted {
            self.cancel = Some(Box::new(move |id: String| f(&id)));
            self
        }

        /// Answers `POST security/runHuntingQuery` with `f(kql)`.
        pub(crate) fn on_hunting_query(
            mut self,
            f: impl Fn(&str) -> Result<Reply<HuntingQueryResults>, CallError> + Send + Sync + 'static,
        ) -> Scripted {
            self.hunting = Some(Box::new(move |q: String| f(&q)));
            self
        }

        /// Answers `POST machines/AddOrRemoveTagForMultipleMachines` with
        /// `f(value, add, machine_ids)`.
        pub(crate) fn on_tags(
            mut self,
            f: impl Fn(&str, bool, &[String]) -> Result<Reply<serde::de::IgnoredAny>, CallError>
            + Send
            + Sync
            + 'static,
        ) -> Scripted {
            self.tags =
                Some(Box::new(move |(v, a, ids): (String, bool, Vec<String>)| f(&v, a, &ids)));
            self
        }

        /// Calls of `kind` (`submit`, `list_actions`, `hunting_query`,
        /// `cancel`, `tags`) made so far.
        pub(crate) fn count(&self, kind: &str) -> u64 {
            self.calls.lock().unwrap().iter().filter(|(k, _)| *k == kind).count() as u64
        }

        /// The filters of the list calls of `kind`, in order.
        pub(crate) fn filters(&self, kind: &str) -> Vec<String> {
            let calls = self.calls.lock().unwrap();
            calls.iter().filter(|(k, _)| *k == kind).map(|(_, f)| f.clone()).collect()
        }

        fn called(&self, kind: &'static str, detail: String) {
            self.calls.lock().unwrap().push((kind, detail));
        }
    }

    /// The handler of a call, or a failed test naming the call.
    fn handler<'a, A, R>(h: &'a Option<Handler<A, R>>, kind: &str) -> &'a Handler<A, R> {
        h.as_ref().unwrap_or_else(|| panic!("unexpected {kind} call: the test set no handler"))
    }

    impl Transport for Scripted {
        async fn authenticate(&self) -> Result<(), AuthError> {
            self.called("authenticate", String::new());
            match self.auth.lock().unwrap().pop_front() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }

        async fn submit(
            &self,
            machine_id: &str,
            action: ActionKind,
            _body: &ActionBody,
        ) -> Result<Reply<MachineAction>, CallError> {
            self.called("submit", String::new());
            handler(&self.submit, "submit")((machine_id.to_string(), action))
        }

        async fn list_actions(
            &self,
            query: &ListQuery,
        ) -> Result<Reply<ODataList<MachineAction>>, CallError> {
            self.called("list_actions", query.filter.clone().unwrap_or_default());
            handler(&self.list_actions, "list_actions")(query.clone())
        }

        async fn list_machines(
            &self,
            query: &ListQuery,
        ) -> Result<Reply<ODataList<Machine>>, CallError> {
            // The engine's device look-ups have their own scripted tenant
            // (`resolve`'s tests), which answers filters over a fleet.
            panic!("unexpected list_machines call ({:?})", query.filter)
        }

        async fn find_by_tag(
            &self,
            tag: &str,
            _starts_with: bool,
        ) -> Result<Reply<ODataList<Machine>>, CallError> {
            // Targets are gathered before the engine starts; the engine's
            // tests never ask for them.
            panic!("unexpected find_by_tag call ({tag:?})")
        }

        async fn file_machines(&self, sha1: &str) -> Result<Reply<ODataList<Machine>>, CallError> {
            panic!("unexpected file_machines call ({sha1:?})")
        }

        async fn hunting_query(&self, kql: &str) -> Result<Reply<HuntingQueryResults>, CallError> {
            self.called("hunting_query", kql.to_string());
            handler(&self.hunting, "hunting_query")(kql.to_string())
        }

        async fn cancel_action(
            &self,
            action_id: &str,
            _comment: Option<&str>,
        ) -> Result<Reply<MachineAction>, CallError> {
            self.called("cancel", action_id.to_string());
            handler(&self.cancel, "cancel")(action_id.to_string())
        }

        async fn tag_machines(
            &self,
            value: &str,
            add: bool,
            machine_ids: &[String],
        ) -> Result<Reply<serde::de::IgnoredAny>, CallError> {
            self.called("tags", machine_ids.len().to_string());
            handler(&self.tags, "tags")((value.to_string(), add, machine_ids.to_vec()))
        }
    }

    /// A reply of 200 with `value`.
    pub(crate) fn ok<R>(value: R) -> Result<Reply<R>, CallError> {
        Ok(Reply { status: 200, value })
    }

    /// One page holding `value`.
    pub(crate) fn page<R>(value: Vec<R>) -> Result<Reply<ODataList<R>>, CallError> {
        ok(ODataList { context: None, value, next_link: None })
    }
}
