//! The gRPC codec of `raftkv.v1`: prost's encoding, with one difference from `tonic-prost`'s
//! codec. A message that does not decode (truncated, a wrong wire type, invalid UTF-8 in a
//! string field) is the sender's mistake, so it is answered `INVALID_ARGUMENT` naming the
//! problem; tonic-prost answers `INTERNAL`, which reads as a server fault and which clients
//! may retry.

use std::marker::PhantomData;

use std::collections::HashMap;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;
use tonic_types::{ErrorDetails, StatusExt};

use crate::rest::ErrorCode;

/// A refusal of the gRPC layer itself (before any handler), with the `ErrorInfo` every
/// refusal of this API carries, so that a client takes it for the node's answer (nothing was
/// applied), not for a broken connection.
pub fn refusal(code: tonic::Code, message: String, reason: ErrorCode) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(
            reason.as_str(),
            crate::metadata::ERROR_DOMAIN,
            HashMap::new(),
        ),
    )
}

/// The first allocation of a message's encode or decode buffer. Most of this API's messages
/// are a few hundred bytes; tonic's default of 8 KiB per message made every call allocate
/// (and free) a buffer large enough to fall outside the allocator's fast bins. A larger message
/// grows its buffer as it goes.
pub const MESSAGE_BUFFER_BYTES: usize = 512;
/// How much an encoder writes before it yields (tonic's default).
pub const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

fn buffers() -> BufferSettings {
    BufferSettings::new(MESSAGE_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

/// prost's encoding with decode failures answered `INVALID_ARGUMENT` (see the module).
#[derive(Debug, Clone)]
pub struct RaftkvCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for RaftkvCodec<T, U> {
    fn default() -> Self {
        RaftkvCodec {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for RaftkvCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffers())
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder { _type: PhantomData }
    }
}

/// The gRPC message prefix: a compression flag and a 4-byte big-endian length.
pub const PREFIX_BYTES: usize = 5;

/// The header (in the trailers, or alone in a trailers-only answer) that carries a call's
/// status code; `0` is OK.
pub const GRPC_STATUS: &str = "grpc-status";

/// `message` as one gRPC message on the wire: uncompressed, with its length prefix. For a
/// client or server that frames its messages without tonic's codec.
pub fn frame(message: &impl prost::Message) -> bytes::Bytes {
    use bytes::BufMut;
    let len = message.encoded_len();
    let mut frame = bytes::BytesMut::with_capacity(PREFIX_BYTES + len);
    frame.put_u8(0);
    frame.put_u32(u32::try_from(len).expect("invariant: a message of this API is under 4 GiB"));
    message
        .encode(&mut frame)
        .expect("invariant: the buffer was sized to the message");
    frame.freeze()
}

/// Decodes one `U` from `buf`, answering a malformed one `INVALID_ARGUMENT` naming the
/// problem (see the module): the rule of [`StrictDecoder`], and of a server that reads a
/// message without tonic's codec.
pub fn decode_message<U: prost::Message + Default>(buf: impl bytes::Buf) -> Result<U, Status> {
    U::decode(buf).map_err(|e| {
        let message = format!(
            "the message is not a valid {}: {e}",
            std::any::type_name::<U>()
                .rsplit("::")
                .next()
                .unwrap_or("message")
        );
        refusal(tonic::Code::InvalidArgument, message, ErrorCode::BadRequest)
    })
}

/// Decodes a `U`, answering a malformed one `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct StrictDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: prost::Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        decode_message(buf).map(Some)
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_message_is_framed_uncompressed_with_its_length() {
        let message = crate::pb::PutResponse {
            revision: 3,
            version: 1,
        };
        let frame = frame(&message);
        assert_eq!(frame[0], 0, "uncompressed");
        let length = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
        assert_eq!(length, message.encoded_len());
        assert_eq!(
            decode_message::<crate::pb::PutResponse>(&frame[PREFIX_BYTES..]).expect("decodes"),
            message
        );
    }
}
