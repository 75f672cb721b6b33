//! The gRPC codec of every `hav.v1` service: prost's, with small starting buffers.
//!
//! A coordinator holds one long-lived stream per agent, and each stream keeps an encode and a
//! decode buffer for as long as it lives. hav's messages are a few hundred bytes (snapshots,
//! events, acks), so buffers start at [`BUFFER_SIZE`] instead of tonic's 8 KiB and grow only for
//! a stream that carries a larger message (a pushed config). Wire format and limits are prost's
//! and tonic's, unchanged.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Starting size of a stream's encode and decode buffers.
pub const BUFFER_SIZE: usize = 256;
/// Encoded bytes a server streaming response buffers before it yields (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost encoding of `T`, decoding of `U`, with [`BUFFER_SIZE`] buffers.
#[derive(Debug, Clone)]
pub struct HavCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for HavCodec<T, U> {
    fn default() -> Self {
        HavCodec(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

impl<T, U> Codec for HavCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
