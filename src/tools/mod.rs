//! Tools beside the data path: the demo, the AsyncAPI document, `vod status` /
//! `vod configure`, and `redrive`.

pub mod asyncapi;
pub mod demo;
pub mod redrive;
pub mod vod;
