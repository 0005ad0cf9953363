//! unionpay: being written.
