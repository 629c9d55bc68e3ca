//! The Confluent wire format: byte 0 is the magic byte `0`, bytes 1..5 the
//! schema id (big-endian u32), the rest the Avro binary body. Any standard
//! Kafka client with a Confluent serializer reads and writes this.

/// The only magic byte defined by the Confluent wire format.
pub const MAGIC_BYTE: u8 = 0;

/// Why a record's framing is unreadable. Each is a distinct dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The record has no value at all (a tombstone on a department topic).
    #[error("record has no value")]
    Empty,
    /// The first byte is not the Confluent magic byte.
    #[error("wrong magic byte {0:#04x}: not in the Confluent wire format (expected 0x00)")]
    WrongMagic(u8),
    /// Fewer than five bytes: the header is cut off.
    #[error("record of {0} bytes is too short for the 5-byte Confluent header")]
    Truncated(usize),
}

impl FramingError {
    /// A short stable label for metrics and dead-letter headers.
    pub fn reason(&self) -> &'static str {
        match self {
            FramingError::Empty => "empty_value",
            FramingError::WrongMagic(_) => "wrong_magic_byte",
            FramingError::Truncated(_) => "truncated_header",
        }
    }
}

/// Frames an Avro body with its schema id.
pub fn frame(schema_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits a framed record into its schema id and Avro body.
pub fn unframe(record: &[u8]) -> Result<(u32, &[u8]), FramingError> {
    match record {
        [] => Err(FramingError::Empty),
        [m, ..] if *m != MAGIC_BYTE => Err(FramingError::WrongMagic(*m)),
        [_, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        short => Err(FramingError::Truncated(short.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_bad_header_has_its_own_error() {
        assert_eq!(unframe(&[]), Err(FramingError::Empty));
        assert_eq!(unframe(&[1, 0, 0, 0, 1]), Err(FramingError::WrongMagic(1)));
        assert_eq!(unframe(&[0, 0, 1]), Err(FramingError::Truncated(3)));
        assert_eq!(unframe(&[0, 0, 0, 1, 2, 9]), Ok((258, &[9u8][..])));
    }

    proptest! {
        #[test]
        fn frame_then_unframe_is_identity(id in any::<u32>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let framed = frame(id, &body);
            prop_assert_eq!(unframe(&framed), Ok((id, &body[..])));
        }

        #[test]
        fn unframe_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = unframe(&bytes);
        }
    }
}
