//! Finalised debits: their ids, their JSON, and the buffer where they wait until the control
//! plane acknowledges them.

pub mod buffer;
pub mod ids;
pub mod json;
