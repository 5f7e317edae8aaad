//! Consumer groups: the classic group protocol ([`membership`]), the coordinator that drives
//! it ([`coordinator`]), and committed offsets in `__consumer_offsets` ([`offsets`]).

pub mod coordinator;
pub mod membership;
pub mod offsets;

pub use coordinator::GroupCoordinator;
