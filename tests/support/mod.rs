//! What the crash tests share (each is a binary of its own): `tests/it`'s common set-up and
//! store helpers, and the child process they kill. Each binary uses only part of it.
#![allow(dead_code)]

pub mod child;
#[path = "../it/common.rs"]
pub mod common;
#[path = "../it/store_support.rs"]
pub mod store_support;
