//! The gRPC codec of `raftkv.v1`: prost's encoding, with one difference from `tonic-prost`'s
//! codec. A message that does not decode (truncated, a wrong wire type, invalid UTF-8 in a
//! string field) is the sender's mistake, so it is answered `INVALID_ARGUMENT` naming the
//! problem; tonic-prost answers `INTERNAL`, which reads as a server fault and which clients
//! may retry.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

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
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder { _type: PhantomData }
    }
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
        U::decode(buf).map(Some).map_err(|e| {
            Status::invalid_argument(format!(
                "the message is not a valid {}: {e}",
                std::any::type_name::<U>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("message")
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
