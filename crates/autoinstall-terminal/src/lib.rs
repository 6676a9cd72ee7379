//! The on-target installer. So far: Identify (DESIGN §4). The rest of the state machine lands
//! with the autoinstall issue.

pub mod identify;
