//! What a live source knows of its server: devices, groups, geofences and each device's latest position;
//! it turns socket events into enriched [`Envelope`]s and positions into the relay's own zone events.
//! Pure (no I/O): the connection feeds it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::directory::Directory;
use crate::event::{Attributes, Device, Envelope, Event, Geofence, Group, Position};
use crate::geo::{Crossing, Shape, Zone, ZoneTracker};
use crate::traccar_config::TraccarSource;

/// One `/api/socket` frame. `{}` (keepalive) is a frame with nothing in it; unknown keys (`logs`) are
/// ignored.
#[derive(Debug, Default, Deserialize)]
pub struct Frame {
    /// Device updates.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// New positions.
    #[serde(default)]
    pub positions: Vec<Position>,
    /// Events (those a `web` notification matched; they carry `attributes.message`).
    #[serde(default)]
    pub events: Vec<Event>,
}

/// The cache of one source.
pub struct Cache {
    /// Devices, groups, geofences.
    pub dir: Arc<RwLock<Directory>>,
    /// Latest position per device.
    positions: HashMap<i64, Position>,
    /// The relay's zones from the configuration.
    own_zones: Vec<Zone>,
    from_server: Option<std::time::Duration>,
    /// Own zones plus, when configured, the server's geofences, and where each device is in them.
    tracker: ZoneTracker,
}

impl Cache {
    /// An empty cache with the source's zones, its directory `dir`.
    pub fn new(cfg: &TraccarSource, dir: Arc<RwLock<Directory>>) -> Cache {
        Cache {
            dir,
            positions: HashMap::new(),
            own_zones: cfg.zones.clone(),
            from_server: cfg.geofences_from_server.then_some(cfg.geofence_dwell),
            tracker: ZoneTracker::new(cfg.zones.clone()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Directory> {
        self.dir.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Devices known.
    pub fn device_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.read().devices.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// A device as the server last described it.
    pub fn device(&self, id: i64) -> Option<Device> {
        self.read().devices.get(&id).cloned()
    }

    /// A device update from a `devices` frame.
    pub fn update_device(&self, d: Device) {
        let mut dir = self.dir.write().unwrap_or_else(|e| e.into_inner());
        dir.devices.insert(d.id, d);
    }

    /// Replaces what the REST endpoints returned; rebuilds the zones from the server's geofences.
    pub fn replace(&mut self, devices: Vec<Device>, groups: Vec<Group>, geofences: Vec<Geofence>) {
        let mut zones = self.own_zones.clone();
        if let Some(dwell) = self.from_server {
            for g in &geofences {
                let Some(area) = g.area.as_deref() else {
                    continue;
                };
                let distance = g
                    .attributes
                    .get("polylineDistance")
                    .and_then(|v| v.as_f64());
                match Shape::parse(area, distance) {
                    Ok(shape) => zones.push(Zone {
                        id: g.id,
                        name: g.name.clone(),
                        area: area.to_string(),
                        shape,
                        dwell,
                    }),
                    Err(e) => {
                        tracing::warn!(geofence = g.id, name = %g.name, error = %e, "geofence skipped")
                    }
                }
            }
        }
        self.tracker.set_zones(zones);
        self.dir
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace(devices, groups, geofences);
    }

    /// An event with the device, its group, its position (when it is the latest one) and its geofence.
    pub fn envelope(&self, event: Event) -> Envelope {
        let position = self
            .positions
            .get(&event.device_id)
            .filter(|p| event.position_id != 0 && p.id == event.position_id)
            .cloned();
        let mut env = Envelope {
            event,
            position,
            device: None,
            geofence: None,
            maintenance: None,
            group: None,
        };
        self.read().fill(&mut env);
        env
    }

    /// Records a position and returns the zone events it causes. A position older than the device's
    /// latest (the socket repeats the latest positions on connect) changes nothing.
    pub fn position(&mut self, p: Position) -> Vec<Envelope> {
        let time = position_time(&p);
        if let Some(last) = self.positions.get(&p.device_id) {
            if position_time(last) > time || last.id == p.id {
                return vec![];
            }
        }
        // Like Traccar, only valid fixes move a device in or out of a zone; and only coordinates that are
        // a place on Earth (not 0,0, not beyond ±90/±180), which the zone index is built for.
        let crossings = match (p.valid, p.map_point()) {
            (true, Ok((lat, lon))) => self.tracker.update(p.device_id, lat, lon, time),
            _ => vec![],
        };
        self.positions.insert(p.device_id, p.clone());
        crossings
            .into_iter()
            .map(|(i, c)| {
                let zone = &self.tracker.zones()[i];
                let mut attributes = Attributes::new();
                attributes.insert("origin".into(), json!("relay"));
                attributes.insert("zone".into(), json!(zone.name));
                attributes.insert("dwell".into(), json!(zone.dwell.as_secs()));
                let event = Event {
                    id: zone_event_id(&zone.key(), p.device_id, c, p.id, time),
                    event_type: c.event_type().to_string(),
                    device_id: p.device_id,
                    event_time: Some(time),
                    position_id: p.id,
                    geofence_id: zone.id,
                    maintenance_id: 0,
                    attributes,
                };
                let mut env = self.envelope(event);
                env.position = Some(p.clone());
                // A server geofence was filled in by its id; a relay zone is described here.
                env.geofence.get_or_insert_with(|| Geofence {
                    id: zone.id,
                    name: zone.name.clone(),
                    area: Some(zone.area.clone()),
                    ..Geofence::default()
                });
                env
            })
            .collect()
    }
}

/// When a position was taken: fix time, else device time, else server time.
fn position_time(p: &Position) -> DateTime<Utc> {
    p.fix_time
        .or(p.device_time)
        .or(p.server_time)
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// A stable id for a relay zone event: the same crossing computed again (after a restart, or a
/// position repeated on reconnect) gets the same id, so the store drops it. Negative, so it never
/// collides with Traccar's own (positive) event ids.
pub fn zone_event_id(
    zone: &str,
    device: i64,
    crossing: Crossing,
    position_id: i64,
    time: DateTime<Utc>,
) -> i64 {
    let mut h = Sha256::new();
    for part in [
        zone,
        &device.to_string(),
        crossing.event_type(),
        &position_id.to_string(),
        &time.timestamp_millis().to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let n = i64::from_be_bytes(d[..8].try_into().expect("8 bytes")) & i64::MAX;
    -n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/payloads/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn socket_frames_decode() {
        for name in ["devices", "events", "positions"] {
            let f: Frame =
                serde_json::from_str(&payload(&format!("websocket/{name}.json"))).unwrap();
            let n = f.devices.len() + f.events.len() + f.positions.len();
            assert!(n > 0, "{name}");
        }
        let keepalive: Frame = serde_json::from_str("{}").unwrap();
        assert!(keepalive.devices.is_empty() && keepalive.events.is_empty());
    }

    fn geofence(file: &str) -> Geofence {
        let v: serde_json::Value = serde_json::from_str(&payload(file)).unwrap();
        serde_json::from_value(v["geofence"].clone()).unwrap()
    }

    fn cache(from_server: bool) -> Cache {
        let raw: crate::traccar_config::RawTraccarSource = serde_yaml::from_str(&format!(
            "{{ name: s, url: 'http://x', token: t, geofences_from_server: {from_server}, geofence_dwell: 10s }}"
        ))
        .unwrap();
        let cfg = TraccarSource::compile(raw, "traccar").unwrap();
        let mut c = Cache::new(&cfg, Default::default());
        let devices: Frame = serde_json::from_str(&payload("websocket/devices.json")).unwrap();
        let groups = vec![Group {
            id: 3,
            name: "Familie Hofer".into(),
            ..Group::default()
        }];
        let geofences = [
            "geofenceExit.json",
            "geofenceEnter.json",
            "deviceOverspeed.json",
        ]
        .map(geofence)
        .to_vec();
        c.replace(devices.devices, groups, geofences);
        c
    }

    fn at(id: i64, lat: f64, lon: f64, secs: i64) -> Position {
        Position {
            id,
            device_id: 12,
            valid: true,
            latitude: lat,
            longitude: lon,
            fix_time: DateTime::from_timestamp(1_800_000_000 + secs, 0),
            ..Position::default()
        }
    }

    #[test]
    fn events_are_enriched_by_id() {
        let c = cache(false);
        let frame: Frame = serde_json::from_str(&payload("websocket/events.json")).unwrap();
        let mut event = frame.events[0].clone();
        event.geofence_id = 9;
        let env = c.envelope(event);
        assert_eq!(env.device.as_ref().unwrap().name, "Lena's Gazelle");
        assert_eq!(env.group.as_ref().unwrap().name, "Familie Hofer");
        assert_eq!(env.geofence.as_ref().unwrap().name, "Zuhause Pradl");
        assert!(env.position.is_none(), "no position of that id is known");
        // A webhook body keeps its own device; only what it lacks is filled in.
        let mut hook = Envelope::from_json(&payload("alarm_vibration.json").into_bytes()).unwrap();
        hook.device.as_mut().unwrap().group_id = 3;
        c.read().fill(&mut hook);
        assert_eq!(hook.group.unwrap().name, "Familie Hofer");
    }

    #[test]
    fn server_geofences_become_zones_with_their_dwell() {
        let (home, away) = ((47.26221, 11.41352), (47.263421, 11.412008));
        let mut c = cache(true);
        assert!(c.position(at(1, away.0, away.1, 0)).is_empty());
        assert!(
            c.position(at(2, home.0, home.1, 5)).is_empty(),
            "dwell 10 s"
        );
        // A repeated or older position changes nothing.
        assert!(c.position(at(2, home.0, home.1, 5)).is_empty());
        assert!(c.position(at(1, away.0, away.1, 0)).is_empty());
        let envs = c.position(at(3, home.0, home.1, 16));
        assert_eq!(envs.len(), 1);
        let e = &envs[0];
        assert_eq!(e.event.event_type, "geofenceEnter");
        assert_eq!((e.event.geofence_id, e.event.position_id), (9, 3));
        assert_eq!(
            e.geofence.as_ref().unwrap().description.as_deref(),
            Some("Garage Pradler Straße")
        );
        assert_eq!(e.device.as_ref().unwrap().name, "Lena's Gazelle");
        let envs = c.position(at(4, away.0, away.1, 20));
        assert_eq!(envs[0].event.event_type, "geofenceExit");
        // Without geofences_from_server the server's geofences are not tracked.
        let mut c = cache(false);
        for (i, (p, t)) in [(away, 0), (home, 5), (home, 100), (away, 200)]
            .iter()
            .enumerate()
        {
            assert!(c.position(at(i as i64 + 1, p.0, p.1, *t)).is_empty());
        }
    }

    #[test]
    fn impossible_coordinates_move_nobody_in_or_out() {
        // Zones around 0,0 and the north pole: a tracker without a fix reports 0,0, and a latitude
        // beyond 90 is what `contains` would still place in a polar circle, though no index box holds it.
        let raw: crate::traccar_config::RawTraccarSource = serde_yaml::from_str(
            "{ name: s, url: 'http://x', token: t, zones: { \
               null: { area: 'CIRCLE (0 0, 500)' }, pole: { area: 'CIRCLE (89.5 0, 200000)' } } }",
        )
        .unwrap();
        let mut c = Cache::new(
            &TraccarSource::compile(raw, "traccar").unwrap(),
            Default::default(),
        );
        assert!(c.position(at(1, 45.0, 10.0, 0)).is_empty());
        assert!(c.position(at(2, 0.0, 0.0, 1)).is_empty(), "0,0 is no fix");
        assert!(
            c.position(at(3, 90.5, 180.0, 2)).is_empty(),
            "beyond the pole"
        );
        // The device stayed outside both: its next real position inside enters.
        let envs = c.position(at(4, 0.001, 0.001, 3));
        assert_eq!(envs.len(), 1);
        assert_eq!(envs[0].event.event_type, "geofenceEnter");
        let envs = c.position(at(5, 89.9, 0.0, 4));
        assert_eq!(envs.len(), 2, "exit null, enter pole");
    }

    #[test]
    fn zone_event_ids_are_stable_negative_and_distinct() {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let a = zone_event_id("zone:home", 12, Crossing::Enter, 5, t);
        assert_eq!(a, zone_event_id("zone:home", 12, Crossing::Enter, 5, t));
        assert!(a < 0);
        assert_ne!(a, zone_event_id("zone:home", 12, Crossing::Exit, 5, t));
        assert_ne!(a, zone_event_id("zone:home", 27, Crossing::Enter, 5, t));
    }
}
