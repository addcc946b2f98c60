//! The browser agent leg (WebRTC widget mode) behind our own trait; the `webrtc` crate is imported
//! only here. Filled by the WebRTC issue.
