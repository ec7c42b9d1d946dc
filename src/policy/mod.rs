//! Policies: the model users write, loading and validation, and selector matching.

pub mod load;
pub mod locate;
pub mod model;
pub mod selector;
pub mod sources;
pub mod suggest;
pub mod unknown;
pub mod validate;

pub use load::{
    Loaded, LoadedPolicy, PolicyKind, PolicyRef, Problem, load_paths, load_paths_with, load_str,
    load_str_with,
};
pub use model::{CanaryPolicy, ClusterCanaryPolicy, PolicySpec};
