//! `mdebulk simulate`: serves the simulator until interrupted.

/// Runs the simulator with its flags; exit 0 once it is stopped.
pub(crate) async fn simulate(args: crate::sim::SimulateArgs) -> anyhow::Result<u8> {
    crate::sim::serve(args).await.map(|()| 0)
}
