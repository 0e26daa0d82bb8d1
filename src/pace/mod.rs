//! Pacing: quota specifications and exact call counting in the three window
//! models, shared by the runner (which must never exceed a quota) and the
//! simulator (which enforces one).

pub mod limit;
pub mod pacer;
pub mod window;

pub use limit::{Limit, LimitError, format_duration, parse_duration, parse_limits};
pub use pacer::{Hold, Pacer, WaitReason, default_margin, minimum_time};
pub use window::{Throttle, WindowModel, Windows};
