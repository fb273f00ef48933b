//! Agents: what runs a message. The built-in `echo` agent is the default for every agent id.

pub mod echo;
