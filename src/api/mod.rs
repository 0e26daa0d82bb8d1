//! Everything about the MDE API itself: the actions and their rules, the wire
//! types, OData query text, timestamps, the clouds, and the client that calls
//! it (auth, errors, the CA roots it trusts).

pub mod action;
pub mod auth;
pub mod client;
pub mod cloud;
pub mod error;
pub mod jwt;
pub mod model;
pub mod net;
pub mod odata;
pub mod route;
pub mod time;
pub mod trust;
pub mod webhook;
