//! Asking for the trade bill's download address (`GET /v3/bill/tradebill`). Downloading it is a
//! separate, signed GET of `download_url` whose body is checked against `hash_value` (SHA-1),
//! then read with [`super::parse_statement`].

use serde::Deserialize;

use super::WechatPayProvider;
use super::wire::{self, Answer, ApiRequest};
use crate::ports::ProviderError;

fn local_rejection(code: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::Rejected {
        code: code.to_owned(),
        message: message.into(),
    }
}

/// `YYYY-MM-DD`, digits only, so it needs no escaping in the signed URL.
fn is_bill_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}

/// `GET /v3/bill/tradebill?bill_date=YYYY-MM-DD&bill_type=ALL`. A malformed date is never sent.
pub(super) fn trade_bill_request(bill_date: &str) -> Result<ApiRequest, ProviderError> {
    if !is_bill_date(bill_date) {
        return Err(local_rejection(
            "INVALID_BILL_DATE",
            format!("bill date {bill_date:?} is not YYYY-MM-DD"),
        ));
    }
    Ok(ApiRequest {
        method: http::Method::GET,
        url: format!("/v3/bill/tradebill?bill_date={bill_date}&bill_type=ALL"),
        body: String::new(),
    })
}

#[derive(Deserialize)]
struct TradeBillAnswer {
    download_url: String,
    hash_value: String,
    #[serde(default)]
    hash_type: String,
}

/// 200 with `download_url` and `hash_value`; anything else is the usual error answer.
pub(super) fn interpret_trade_bill(answer: &Answer) -> Result<(String, String), ProviderError> {
    if answer.status != 200 {
        return Err(wire::error_answer(answer));
    }
    let bill: TradeBillAnswer = serde_json::from_slice(&answer.body)
        .map_err(|e| ProviderError::Unknown(format!("trade bill answer: {e}")))?;
    if bill.download_url.is_empty() || bill.hash_value.is_empty() {
        return Err(ProviderError::Unknown(
            "trade bill answer without download_url or hash_value".into(),
        ));
    }
    if !bill.hash_type.is_empty() && bill.hash_type != "SHA1" {
        return Err(ProviderError::Unknown(format!(
            "trade bill hash_type {:?}, expected SHA1",
            bill.hash_type
        )));
    }
    Ok((bill.download_url, bill.hash_value))
}

impl WechatPayProvider {
    /// The day's trade bill (all trades, Beijing date `YYYY-MM-DD`): its `download_url` and
    /// the SHA-1 `hash_value` of the file. The bill of a day is ready from 10:00 the next day;
    /// before that WeChat Pay rejects with a 4xx (e.g. `NO_STATEMENT_EXIST`).
    pub async fn trade_bill_url(&self, bill_date: &str) -> Result<(String, String), ProviderError> {
        let answer = self.call(&trade_bill_request(bill_date)?).await?;
        interpret_trade_bill(&answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.as_bytes().to_vec(),
            authentic: true,
        }
    }

    #[test]
    fn trade_bill_request_is_a_get_of_the_signed_url() {
        let request = trade_bill_request("2019-06-11").expect("request");
        assert_eq!(request.method, http::Method::GET);
        assert_eq!(
            request.url,
            "/v3/bill/tradebill?bill_date=2019-06-11&bill_type=ALL"
        );
        assert!(request.body.is_empty());
        for bad in ["2019-6-11", "20190611", "2019-06-11&x=1", "", "2019/06/11"] {
            assert!(
                matches!(trade_bill_request(bad), Err(ProviderError::Rejected { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn trade_bill_answer_gives_url_and_hash() {
        let body = r#"{"download_url":"https://api.mch.weixin.qq.com/v3/billdownload/file?token=6XIv5","hash_type":"SHA1","hash_value":"79bb0f45fc4c42234a918000b2668d689e2bde04"}"#;
        assert_eq!(
            interpret_trade_bill(&answer(200, body)).expect("bill"),
            (
                "https://api.mch.weixin.qq.com/v3/billdownload/file?token=6XIv5".to_owned(),
                "79bb0f45fc4c42234a918000b2668d689e2bde04".to_owned()
            )
        );
        assert!(matches!(
            interpret_trade_bill(&answer(200, r#"{"download_url":"","hash_value":"x"}"#)),
            Err(ProviderError::Unknown(_))
        ));
        assert!(matches!(
            interpret_trade_bill(&answer(
                200,
                r#"{"download_url":"u","hash_type":"MD5","hash_value":"x"}"#
            )),
            Err(ProviderError::Unknown(_))
        ));
        let missing = r#"{"code":"NO_STATEMENT_EXIST","message":"bill not ready"}"#;
        assert!(matches!(
            interpret_trade_bill(&answer(400, missing)),
            Err(ProviderError::Rejected { code, .. }) if code == "NO_STATEMENT_EXIST"
        ));
        let busy = r#"{"code":"SYSTEM_ERROR","message":"retry"}"#;
        assert!(matches!(
            interpret_trade_bill(&answer(500, busy)),
            Err(ProviderError::Unknown(_))
        ));
    }
}
