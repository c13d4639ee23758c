//! Enrichment data: the devices, groups and geofences a live Traccar source knows of its server
//! ([`Directory`]), kept per dedup namespace ([`Directories`]) so that the webhook intake can fill in what
//! a webhook body (an event, or a forwarded position without its device) lacks from the live source of
//! the same namespace; and [`Whereabouts`], where every device was last seen.
//!
//! Pure data (no I/O), below the services: the live source fills it, the pipeline reads it, and neither
//! needs to import the other for it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::event::{Device, Envelope, Geofence, Group, Position};

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

/// The most devices [`Whereabouts`] keeps: a flood of made-up device ids cannot grow it without bound
/// (a device beyond it is not followed until one is forgotten at restart).
pub const MAX_WHEREABOUTS: usize = 100_000;

/// Where one device was last seen.
#[derive(Debug, Clone)]
pub struct Whereabout {
    /// Device id.
    pub device_id: i64,
    /// Its name (empty until an event or the live source named it).
    pub name: String,
    /// Its attributes as last seen (a chat id an owner's rule routes to).
    pub attributes: crate::event::Attributes,
    /// Its latest position, if any.
    pub position: Option<Position>,
    /// When that position arrived here, unix ms.
    pub updated_ms: i64,
}

/// The latest position and name of every device the relay has heard of, from events, the live
/// sources' `positions` frames and Traccar's position forwarding: what "Where is it?", `/where` and a
/// live pin read. Kept in memory only (positions are not stored): after a restart a device is known
/// again from its next position. Keyed by device id across sources.
#[derive(Debug, Default)]
pub struct Whereabouts(RwLock<HashMap<i64, Whereabout>>);

impl Whereabouts {
    /// Records what `device` and `position` say (either may be absent) at `now_ms`. A position older
    /// than the one kept (by fix time) is ignored: forwarding and the socket may both send it, and a
    /// late one must not move a pin back.
    pub fn saw(
        &self,
        device_id: i64,
        device: Option<&Device>,
        position: Option<&Position>,
        now_ms: i64,
    ) {
        if device_id == 0 {
            return;
        }
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&device_id) && map.len() >= MAX_WHEREABOUTS {
            return;
        }
        let w = map.entry(device_id).or_insert_with(|| Whereabout {
            device_id,
            name: String::new(),
            attributes: Default::default(),
            position: None,
            updated_ms: 0,
        });
        if let Some(d) = device {
            if !d.name.is_empty() {
                w.name.clone_from(&d.name);
            }
            w.attributes.clone_from(&d.attributes);
        }
        if let Some(p) = position {
            let newer = match (&w.position, p.fix_time) {
                (Some(old), Some(t)) => old.fix_time.is_none_or(|o| t >= o),
                (Some(_), None) => false,
                (None, _) => true,
            };
            if newer {
                w.position = Some(p.clone());
                w.updated_ms = now_ms;
            }
        }
    }

    /// What is known of one device.
    pub fn get(&self, device_id: i64) -> Option<Whereabout> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(&device_id).cloned()
    }

    /// Every device known, by id.
    pub fn all(&self) -> Vec<Whereabout> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Whereabout> = map.values().cloned().collect();
        out.sort_unstable_by_key(|w| w.device_id);
        out
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

    /// Every device the live sources know.
    pub fn devices(&self) -> Vec<Device> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.values()
            .flat_map(|d| {
                let d = d.read().unwrap_or_else(|e| e.into_inner());
                d.devices.values().cloned().collect::<Vec<_>>()
            })
            .collect()
    }

    /// Enriches a webhook event from the live source sharing its namespace, if there is one.
    pub fn fill(&self, namespace: &str, env: &mut Envelope) {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        if let Some(dir) = map.get(namespace) {
            dir.read().unwrap_or_else(|e| e.into_inner()).fill(env);
        }
    }

    /// The device `id` as the live source sharing `namespace` knows it, if there is one that does.
    pub fn device(&self, namespace: &str, id: i64) -> Option<Device> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        let dir = map.get(namespace)?;
        let dir = dir.read().unwrap_or_else(|e| e.into_inner());
        dir.devices.get(&id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn pos(device_id: i64, lat: f64, secs: i64) -> Position {
        Position {
            device_id,
            latitude: lat,
            fix_time: Some(chrono::Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn a_device_is_found_in_its_own_namespace_only() {
        let dirs = Directories::default();
        let dev = Device {
            id: 7,
            name: "Lena's bike".into(),
            ..Default::default()
        };
        dirs.register("traccar")
            .write()
            .unwrap()
            .replace(vec![dev], vec![], vec![]);
        assert_eq!(dirs.device("traccar", 7).unwrap().name, "Lena's bike");
        assert!(dirs.device("traccar", 8).is_none());
        assert!(dirs.device("other", 7).is_none());
    }

    #[test]
    fn whereabouts_keep_the_newest_fix_and_the_name() {
        let w = Whereabouts::default();
        let dev = Device {
            id: 7,
            name: "Lena's bike".into(),
            ..Default::default()
        };
        w.saw(7, Some(&dev), Some(&pos(7, 1.0, 10)), 100);
        w.saw(7, None, Some(&pos(7, 2.0, 5)), 200);
        let got = w.get(7).unwrap();
        assert_eq!((got.name.as_str(), got.updated_ms), ("Lena's bike", 100));
        assert_eq!(got.position.unwrap().latitude, 1.0);
        w.saw(7, None, Some(&pos(7, 3.0, 20)), 300);
        assert_eq!(w.get(7).unwrap().position.unwrap().latitude, 3.0);
        w.saw(0, Some(&dev), None, 1);
        assert_eq!(w.all().len(), 1);
    }
}
