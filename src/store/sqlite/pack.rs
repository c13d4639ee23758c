//! Stored text packed small: an event's body (`events.payload`) and a delivery's content
//! (`deliveries.content`) are written as zstd frames compressed with a dictionary built into the
//! binary, and read back as the text they were.
//!
//! Traccar's bodies are small JSON documents that repeat the same keys (`deviceId`, `fixTime`,
//! `attributes`, ...): on its own, zstd halves one (1,064 bytes to ~560), but against a dictionary of
//! typical bodies and stored notifications it keeps a sixth of it (~170). That, not the rows' other
//! columns, is most of what a delivered event costs on disk (issue 22: ~3.5 KB per event before, the
//! event once in its row and again inside its webhook body).
//!
//! A packed value is a BLOB: one version byte ([`V1`]: this dictionary), then the zstd frame, which
//! records the text's length. Values written before packing existed, and texts too short to gain
//! anything, are TEXT and read as they are; both kinds live in one column (SQLite keeps each value's
//! own type), so no migration rewrites a database. The dictionary may never change: a new one takes a
//! new version byte, and this module keeps reading the old ones.

use std::cell::RefCell;
use std::sync::LazyLock;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

/// Version byte of values packed with [`DICT_V1`].
pub const V1: u8 = 1;
/// Typical Traccar bodies and stored notifications (see the module docs). Never edit: rows packed
/// with it cannot be read with another.
const DICT_V1: &[u8] = include_bytes!("pack_dict_v1.txt");
/// zstd's level: 3 (its default) packs a body in a few microseconds; higher levels gain a few bytes
/// for several times the CPU, on the writer's path.
const LEVEL: i32 = 3;
/// Texts shorter than this are stored as TEXT: a frame's header and the version byte would eat what
/// packing gains.
const MIN_PACKED: usize = 48;
/// The largest text a packed value may claim to hold: a frame that says more is refused rather than
/// allocated (bodies are bounded by the intake's limit, far below this).
const MAX_UNPACKED: usize = 64 << 20;

static ENCODER: LazyLock<EncoderDictionary<'static>> =
    LazyLock::new(|| EncoderDictionary::copy(DICT_V1, LEVEL));
static DECODER: LazyLock<DecoderDictionary<'static>> =
    LazyLock::new(|| DecoderDictionary::copy(DICT_V1));

thread_local! {
    /// Contexts are reused: making one allocates its tables.
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// The stored form of `text`: a packed BLOB, or the text itself when short (or, should zstd fail,
/// which it does not for input in memory, the text too: it is read back either way).
pub fn pack(text: &str) -> ToSqlOutput<'_> {
    if text.len() < MIN_PACKED {
        return ToSqlOutput::from(text);
    }
    let packed = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Compressor::with_prepared_dictionary(&ENCODER).ok();
        }
        let mut out = Vec::with_capacity(text.len() / 2 + 16);
        out.push(V1);
        let frame = c.as_mut()?.compress(text.as_bytes()).ok()?;
        out.extend_from_slice(&frame);
        Some(out)
    });
    match packed {
        Some(blob) if blob.len() < text.len() => ToSqlOutput::from(blob),
        _ => ToSqlOutput::from(text),
    }
}

/// The text a stored value holds: TEXT as it is, a packed BLOB unpacked.
pub fn unpack(value: ValueRef<'_>) -> FromSqlResult<String> {
    match value {
        ValueRef::Text(t) => {
            String::from_utf8(t.to_vec()).map_err(|e| FromSqlError::Other(e.into()))
        }
        ValueRef::Blob(b) => unpack_blob(b).map_err(|e| FromSqlError::Other(e.into())),
        _ => Err(FromSqlError::InvalidType),
    }
}

/// Why a packed value could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The first byte names no dictionary this build knows.
    #[error("packed with an unknown dictionary (version {0}); a newer trackrelay wrote it")]
    Version(u8),
    /// The frame is damaged or claims more than [`MAX_UNPACKED`].
    #[error("damaged packed value: {0}")]
    Frame(String),
    /// The unpacked bytes are not UTF-8.
    #[error("packed value is not text: {0}")]
    Utf8(#[from] std::string::FromUtf8Error),
}

fn unpack_blob(b: &[u8]) -> Result<String, UnpackError> {
    let (&version, frame) = b.split_first().ok_or(UnpackError::Version(0))?;
    if version != V1 {
        return Err(UnpackError::Version(version));
    }
    let size = zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten()
        .filter(|&n| n <= MAX_UNPACKED as u64)
        .ok_or_else(|| UnpackError::Frame("no length, or too long".into()))?;
    let bytes = DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(
                Decompressor::with_prepared_dictionary(&DECODER)
                    .map_err(|e| UnpackError::Frame(e.to_string()))?,
            );
        }
        let d = d.as_mut().expect("made above");
        d.decompress(frame, size as usize)
            .map_err(|e| UnpackError::Frame(e.to_string()))
    })?;
    Ok(String::from_utf8(bytes)?)
}

/// A text column that may hold packed values, for `ToSql` parameters.
#[derive(Debug, Clone, Copy)]
pub struct Packed<'a>(pub &'a str);

impl ToSql for Packed<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(pack(self.0))
    }
}

/// A text read from a column that may hold packed values (`row.get::<_, Unpacked>(i)?.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked(pub String);

impl FromSql for Unpacked {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        unpack(value).map(Unpacked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(text: &str) -> rusqlite::types::Value {
        match pack(text) {
            ToSqlOutput::Owned(v) => v,
            ToSqlOutput::Borrowed(v) => v.into(),
            _ => unreachable!("pack answers a value"),
        }
    }

    fn read(v: &rusqlite::types::Value) -> String {
        unpack(ValueRef::from(v)).unwrap()
    }

    #[test]
    fn a_body_is_packed_to_a_fraction_and_read_back_byte_for_byte() {
        let body = include_str!("../../../tests/payloads/alarm_vibration.json");
        let v = stored(body);
        let rusqlite::types::Value::Blob(b) = &v else {
            panic!("a body is packed: {v:?}")
        };
        assert_eq!(b[0], V1);
        assert!(
            b.len() * 3 < body.len(),
            "{} of {} bytes",
            b.len(),
            body.len()
        );
        assert_eq!(read(&v), body);
    }

    #[test]
    fn short_texts_and_texts_stored_before_stay_text() {
        assert_eq!(stored("{}"), rusqlite::types::Value::Text("{}".into()));
        assert_eq!(stored(""), rusqlite::types::Value::Text(String::new()));
        let old = rusqlite::types::Value::Text("{\"event\":{\"id\":1}} stored as it came".into());
        assert_eq!(read(&old), "{\"event\":{\"id\":1}} stored as it came");
    }

    #[test]
    fn text_unlike_the_dictionary_round_trips_too() {
        let odd: String = (0..5000)
            .map(|i| char::from(b'!' + (i * 7 % 90) as u8))
            .collect();
        let v = stored(&odd);
        assert_eq!(read(&v), odd);
        let unicode = "Lena's Gazelle 🚲 verließ die Zone «Zuhause» ".repeat(20);
        assert_eq!(read(&stored(&unicode)), unicode);
    }

    #[test]
    fn damaged_or_foreign_values_are_refused_clearly() {
        let body = include_str!("../../../tests/payloads/geofenceExit.json");
        let rusqlite::types::Value::Blob(mut b) = stored(body) else {
            panic!("packed")
        };
        let mut other = b.clone();
        other[0] = 9;
        let e = unpack(ValueRef::Blob(&other)).unwrap_err().to_string();
        assert!(e.contains("unknown dictionary (version 9)"), "{e}");
        b.truncate(b.len() / 2);
        let e = unpack(ValueRef::Blob(&b)).unwrap_err().to_string();
        assert!(e.contains("damaged packed value"), "{e}");
        assert!(unpack(ValueRef::Blob(&[])).is_err());
        assert!(unpack(ValueRef::Integer(3)).is_err());
    }
}
