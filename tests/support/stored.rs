//! What a relay's data directory holds, for tests that check a secret is kept out of it (and that the
//! messages are in it): every file's bytes, then the text of every packed value in its database
//! (`events.payload`, `deliveries.content`: zstd frames on disk, see `store::sqlite::pack`), so a
//! secret inside a compressed body is found as well as one in the clear.

use std::path::Path;

/// The files' bytes followed by the unpacked bodies and contents of the database in `dir`.
pub fn stored_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for f in std::fs::read_dir(dir).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() && !p.ends_with("trackrelay.yaml") {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
    let db = dir.join(trackrelay::store::sqlite::DB_FILE);
    if db.exists() {
        let c = rusqlite::Connection::open(&db).unwrap();
        for sql in [
            "SELECT payload FROM events",
            "SELECT content FROM deliveries",
        ] {
            let mut stmt = c.prepare(sql).unwrap();
            let texts = stmt
                .query_map([], |r| {
                    Ok(trackrelay::store::sqlite::pack::unpack(r.get_ref(0)?)?)
                })
                .unwrap();
            for t in texts {
                out.extend(t.unwrap().into_bytes());
                out.push(b'\n');
            }
        }
    }
    out
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}
