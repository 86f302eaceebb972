//! Axle simulator (being written).

use axum::Router;

use crate::SimContext;

#[derive(Clone, Debug)]
pub struct AxleSimConfig {
    pub client_id: String,
    pub client_secret: String,
}

impl Default for AxleSimConfig {
    fn default() -> Self {
        Self { client_id: "cli_sandbox".into(), client_secret: "axle-sandbox-secret".into() }
    }
}

#[derive(Clone, Debug)]
pub struct AxleSim {
    #[allow(dead_code)]
    ctx: SimContext,
}

impl AxleSim {
    pub fn new(_config: AxleSimConfig, ctx: SimContext) -> Self {
        Self { ctx }
    }
}

pub fn router(_state: AxleSim) -> Router {
    Router::new()
}

pub fn control_router(_state: AxleSim) -> Router {
    Router::new()
}
