//! What the adapters' tests expect of a verified callback: one variant or the other.

use crate::ports::{CallbackRejection, Notification, RefundNotice, Verified};

/// The payment notification a callback verified as; a refund notice fails the test.
pub(crate) fn payment(
    verified: Result<Verified, CallbackRejection>,
) -> Result<Notification, CallbackRejection> {
    verified.map(|v| match v {
        Verified::Payment(notification) => notification,
        Verified::Refund(notice) => panic!("a refund notice, not a payment: {notice:?}"),
    })
}

/// The refund notice a callback verified as; a payment notification fails the test.
pub(crate) fn refund(
    verified: Result<Verified, CallbackRejection>,
) -> Result<RefundNotice, CallbackRejection> {
    verified.map(|v| match v {
        Verified::Refund(notice) => notice,
        Verified::Payment(notification) => {
            panic!("a payment notification, not a refund: {notification:?}")
        }
    })
}
