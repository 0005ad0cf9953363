//! The shared step that asks a provider about a payment and puts its answer in the decision
//! table's words ([`Report`]). It decides nothing.

use crate::domain::Payment;
use crate::domain::decision::{Ask, CreateAnswer, Report};
use crate::ports::{PaymentProvider, ProviderCreate, ProviderCreated, ProviderError};

/// A provider's answer, with the pay code when a create asked again was answered.
pub struct Answer {
    pub report: Report,
    pub created: Option<ProviderCreated>,
}

impl From<Report> for Answer {
    fn from(report: Report) -> Self {
        Self {
            report,
            created: None,
        }
    }
}

/// The first question of every check: what does the provider know of this trade?
pub async fn query(adapter: &dyn PaymentProvider, payment: &Payment) -> Report {
    match adapter.query(&payment.payment_id).await {
        Ok(Some(trade)) => Report::Trade(trade),
        Ok(None) => Report::NoTrade,
        Err(e) => Report::NoAnswer(format!("query: {e}")),
    }
}

/// Asks what the decision table asked for.
pub async fn ask(adapter: &dyn PaymentProvider, payment: &Payment, question: Ask) -> Answer {
    match question {
        Ask::Close => match adapter.close(&payment.payment_id).await {
            Ok(outcome) => Report::Close(outcome).into(),
            Err(e) => Report::NoAnswer(format!("close: {e}")).into(),
        },
        Ask::QueryAfterClose => match adapter.query(&payment.payment_id).await {
            Ok(trade) => Report::TradeAfterClose(trade).into(),
            Err(e) => Report::NoAnswer(format!(
                "close answered already paid, the query then failed: {e}"
            ))
            .into(),
        },
        Ask::CreateAgain { trade_exists } => {
            let result = adapter.create(&ProviderCreate::for_payment(payment)).await;
            let (answer, created) = create_answer(result);
            Answer {
                report: Report::Recreated {
                    trade_exists,
                    answer,
                },
                created,
            }
        }
    }
}

/// A create's result as the table reads it, and the pay code when it was accepted.
pub fn create_answer(
    result: Result<ProviderCreated, ProviderError>,
) -> (CreateAnswer, Option<ProviderCreated>) {
    match result {
        Ok(created) => (CreateAnswer::Accepted, Some(created)),
        Err(ProviderError::Rejected { code, message }) => {
            (CreateAnswer::Refused(format!("{code}: {message}")), None)
        }
        Err(ProviderError::Unknown(why)) => (CreateAnswer::NoAnswer(why), None),
    }
}
