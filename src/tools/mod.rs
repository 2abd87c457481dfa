//! Tools beside the data path: the demo and the AsyncAPI document.

pub mod asyncapi;
pub mod demo;
