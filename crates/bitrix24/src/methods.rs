//! [`Method`]: a typed REST method (its name, its parameters, how its answer decodes), so that a
//! call reads `client.invoke(&ep, &Finish::new(call_id, user)).await?` and the same value can go
//! into a `batch` ([`BatchCommand::of`](crate::BatchCommand::of), [`BatchResult::take`](crate::BatchResult::take)).
//!
//! The methods are grouped by scope: [`telephony`](crate::telephony), [`crm`](crate::crm),
//! [`user`](crate::user), [`event`](crate::event), [`app`](crate::app). Anything else goes through
//! [`Client::call`](crate::Client::call) with [`Params`].

use serde::de::DeserializeOwned;

use crate::{Error, Params, Response};

/// A REST method with typed parameters and a typed result.
pub trait Method {
    /// What the answer decodes into.
    type Output;

    /// The method name (`telephony.externalcall.finish`); Bitrix24 ignores its case.
    fn name(&self) -> &'static str;

    /// The parameters as sent.
    fn params(&self) -> Params;

    /// Decodes a successful answer (`result`, plus `total`/`next` for list methods).
    ///
    /// # Errors
    /// [`Error::Decode`] when the answer does not have the expected shape.
    fn decode(resp: Response) -> Result<Self::Output, Error>;
}

/// [`Method::decode`] for methods whose `result` alone is the output.
pub(crate) fn decode_result<T: DeserializeOwned>(resp: Response) -> Result<T, Error> {
    resp.decode()
}

/// Implements [`Method`] for a type with a fixed name and a `result`-only output.
macro_rules! method {
    ($ty:ty, $name:expr, $out:ty) => {
        impl $ty {
            /// The method's name, as [`Method::name`](crate::Method::name) returns it.
            pub const METHOD: &'static str = $name;
        }

        impl $crate::methods::Method for $ty {
            type Output = $out;

            fn name(&self) -> &'static str {
                $name
            }

            fn params(&self) -> $crate::Params {
                self.to_params()
            }

            fn decode(resp: $crate::Response) -> Result<$out, $crate::Error> {
                $crate::methods::decode_result(resp)
            }
        }
    };
}
pub(crate) use method;
