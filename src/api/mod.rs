//! Everything about the MDE API itself: the actions and their rules, the wire
//! types, timestamps.

pub mod action;
pub mod model;
pub mod route;
pub mod time;
