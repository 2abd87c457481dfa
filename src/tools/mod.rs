//! Tools beside the data path: the demo, the AsyncAPI document, and `vod status` /
//! `vod configure`.

pub mod asyncapi;
pub mod demo;
pub mod vod;
