//! The zone tracker under criterion (issue 22): 1,000 zones (circles, 50-corner polygons, lines) over
//! a country, positions of random devices of a fleet. Run: `cargo bench --bench zones`
//! (`ZONE_BENCH_DEVICES=N` for another fleet size).

use std::hint::black_box;
use std::time::Duration;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trackrelay::geo::{Shape, Zone, ZoneTracker};

/// Devices of the fleet; `ZONE_BENCH_DEVICES` overrides it.
const DEVICES: i64 = 100_000;
/// Zones: a third each circles, polygons and lines.
const ZONES: usize = 1_000;
/// Positions prepared in advance and fed round robin.
const POSITIONS: usize = 1 << 20;
/// Roughly Austria: latitude and longitude ranges.
const LAT: (f64, f64) = (46.4, 49.0);
const LON: (f64, f64) = (9.5, 17.2);
/// Metres per degree of latitude.
const M_PER_DEG: f64 = 111_320.0;

fn devices() -> i64 {
    std::env::var("ZONE_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEVICES)
}

/// `(lat, lon)` `metres` from `(lat, lon)` at `bearing` (radians), on a local flat approximation.
fn offset(lat: f64, lon: f64, metres: f64, bearing: f64) -> (f64, f64) {
    let dlat = metres * bearing.cos() / M_PER_DEG;
    let dlon = metres * bearing.sin() / (M_PER_DEG * lat.to_radians().cos());
    (lat + dlat, lon + dlon)
}

fn wkt_points(points: &[(f64, f64)]) -> String {
    let p: Vec<String> = points
        .iter()
        .map(|(a, b)| format!("{a:.6} {b:.6}"))
        .collect();
    p.join(", ")
}

/// Zone `i`, centred at `(lat, lon)`: a circle of 100 m – 5 km, a 50-corner polygon of 200 m – 3 km
/// around it, or a line of 20 points wandering about 10 km with a 25–100 m corridor.
fn zone(i: usize, rng: &mut StdRng, lat: f64, lon: f64) -> Zone {
    let (area, distance) = match i % 3 {
        0 => (
            format!(
                "CIRCLE ({lat:.6} {lon:.6}, {:.0})",
                rng.random_range(100.0..5_000.0)
            ),
            None,
        ),
        1 => {
            let r = rng.random_range(200.0..3_000.0);
            let corners: Vec<(f64, f64)> = (0..50)
                .map(|k| {
                    let bearing = k as f64 / 50.0 * std::f64::consts::TAU;
                    offset(lat, lon, r * rng.random_range(0.6..1.0), bearing)
                })
                .collect();
            (format!("POLYGON (({}))", wkt_points(&corners)), None)
        }
        _ => {
            let (mut p, mut points) = ((lat, lon), vec![(lat, lon)]);
            for _ in 1..20 {
                p = offset(
                    p.0,
                    p.1,
                    500.0,
                    rng.random_range(0.0..std::f64::consts::TAU),
                );
                points.push(p);
            }
            let d = rng.random_range(25.0..100.0);
            (format!("LINESTRING ({})", wkt_points(&points)), Some(d))
        }
    };
    Zone {
        id: i as i64 + 1,
        name: format!("zone {i}"),
        shape: Shape::parse(&area, distance).unwrap(),
        area,
        dwell: Duration::from_secs(if i % 4 == 0 { 60 } else { 0 }),
    }
}

/// The zones and their centres.
fn zones(rng: &mut StdRng) -> (Vec<Zone>, Vec<(f64, f64)>) {
    (0..ZONES)
        .map(|i| {
            let c = (
                rng.random_range(LAT.0..LAT.1),
                rng.random_range(LON.0..LON.1),
            );
            (zone(i, rng, c.0, c.1), c)
        })
        .unzip()
}

/// Positions of random devices: half anywhere in the country, half within 3 km of a zone's centre (so
/// that a good share of them is inside a zone and devices enter, dwell and leave).
fn positions(rng: &mut StdRng, centres: &[(f64, f64)], devices: i64) -> Vec<(i64, f64, f64)> {
    (0..POSITIONS)
        .map(|_| {
            let device = rng.random_range(0..devices);
            let (lat, lon) = if rng.random_bool(0.5) {
                (
                    rng.random_range(LAT.0..LAT.1),
                    rng.random_range(LON.0..LON.1),
                )
            } else {
                let c = centres[rng.random_range(0..centres.len())];
                let m = rng.random_range(0.0..3_000.0);
                offset(c.0, c.1, m, rng.random_range(0.0..std::f64::consts::TAU))
            };
            (device, lat, lon)
        })
        .collect()
}

fn at(second: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + second, 0).unwrap()
}

fn tracker(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(22);
    let devices = devices();
    let (zones, centres) = zones(&mut rng);
    let positions = positions(&mut rng, &centres, devices);
    let mut tr = ZoneTracker::new(zones);
    // Every device's first position before measuring: the steady state of a running relay.
    for d in 0..devices {
        let (_, lat, lon) = positions[d as usize % POSITIONS];
        tr.update(d, lat, lon, at(0));
    }
    let mut g = c.benchmark_group("zones");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    eprintln!("zones bench: {devices} devices, {ZONES} zones");
    g.bench_function("update", |b| {
        b.iter(|| {
            i += 1;
            let (d, lat, lon) = positions[i % POSITIONS];
            black_box(tr.update(d, lat, lon, at(i as i64 / 1_000 + 1)).len())
        })
    });
    g.finish();
    // The figure scripts/bench/run reads: state per device after the measurement.
    println!(
        "zones state: {} devices, {:.0} bytes per device",
        tr.devices(),
        tr.state_bytes() as f64 / tr.devices() as f64
    );
}

criterion_group!(benches, tracker);
criterion_main!(benches);
