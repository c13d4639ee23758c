//! Enrichment data: the devices, groups and geofences a live Traccar source knows of its server
//! ([`Directory`]), kept per dedup namespace ([`Directories`]) so that the webhook intake can fill in what
//! a webhook body lacks from the live source of the same namespace.
//!
//! Pure data (no I/O), below the services: the live source fills it, the pipeline reads it, and neither
//! needs to import the other for it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::event::{Device, Envelope, Geofence, Group};

/// Devices, groups and geofences of one server, by id. Shared (read-only) with the webhook intake,
/// which fills in what a webhook body lacks (the group) from the source of the same dedup namespace.
#[derive(Debug, Default)]
pub struct Directory {
    /// Devices by id.
    pub devices: HashMap<i64, Device>,
    groups: HashMap<i64, Group>,
    geofences: HashMap<i64, Geofence>,
}

impl Directory {
    /// Replaces everything with what the server's REST endpoints returned.
    pub fn replace(&mut self, devices: Vec<Device>, groups: Vec<Group>, geofences: Vec<Geofence>) {
        self.devices = devices.into_iter().map(|d| (d.id, d)).collect();
        self.groups = groups.into_iter().map(|g| (g.id, g)).collect();
        self.geofences = geofences.into_iter().map(|g| (g.id, g)).collect();
    }

    /// Fills in the device, its group and the event's geofence where `env` lacks them.
    pub fn fill(&self, env: &mut Envelope) {
        if env.device.is_none() {
            env.device = self.devices.get(&env.event.device_id).cloned();
        }
        if env.group.is_none() {
            let group = env.device.as_ref().map(|d| d.group_id).unwrap_or(0);
            env.group = self.groups.get(&group).cloned();
        }
        if env.geofence.is_none() && env.event.geofence_id != 0 {
            env.geofence = self.geofences.get(&env.event.geofence_id).cloned();
        }
    }
}

/// The directories of every live source, by dedup namespace.
#[derive(Debug, Default)]
pub struct Directories(RwLock<HashMap<String, Arc<RwLock<Directory>>>>);

impl Directories {
    /// The directory of `namespace`, created empty when new.
    pub fn register(&self, namespace: &str) -> Arc<RwLock<Directory>> {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        map.entry(namespace.to_string()).or_default().clone()
    }

    /// Enriches a webhook event from the live source sharing its namespace, if there is one.
    pub fn fill(&self, namespace: &str, env: &mut Envelope) {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        if let Some(dir) = map.get(namespace) {
            dir.read().unwrap_or_else(|e| e.into_inner()).fill(env);
        }
    }
}
