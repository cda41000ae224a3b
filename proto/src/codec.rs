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
