//! The signature backend at the edge: the runtime's WebCrypto (`crypto.subtle.verify`, ECDSA P-256
//! with SHA-256 over raw `r || s`), with each key imported once per isolate.

use js_sys::futures::JsFuture;
use jwks::{AsyncEs256Verifier, KeySet, PublicKey};
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use wasm_bindgen::prelude::{Closure, wasm_bindgen};
use wasm_bindgen::{JsCast as _, JsValue};
use web_sys::{CryptoKey, EcKeyImportParams, EcdsaParams, SubtleCrypto};

/// What every verification (and the assertions' signing) needs, made once per isolate.
pub(super) struct Subtle {
    pub(super) subtle: SubtleCrypto,
    verify_params: EcdsaParams,
}

thread_local! {
    static SUBTLE: OnceCell<Option<Subtle>> = const { OnceCell::new() };
    /// Imported keys by thumbprint (the key's identity, whatever `kid` a JWKS gives it).
    static KEYS: RefCell<HashMap<String, CryptoKey>> = RefCell::new(HashMap::new());
}

/// `crypto.subtle`, reached through the global object: workerd's global is not a
/// `WorkerGlobalScope`, so web-sys' typed accessors do not apply.
fn make_subtle() -> Option<Subtle> {
    let crypto = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("crypto")).ok()?;
    if !crypto.is_object() {
        return None;
    }
    let subtle = crypto.unchecked_into::<web_sys::Crypto>().subtle();
    Some(Subtle { subtle, verify_params: EcdsaParams::new_with_str("ECDSA", "SHA-256") })
}

/// Runs `action` with `crypto.subtle`; `None` when the runtime has none.
pub(super) fn with_subtle<T>(action: impl FnOnce(&Subtle) -> T) -> Option<T> {
    SUBTLE.with(|cell| cell.get_or_init(make_subtle).as_ref().map(action))
}

/// The imported form of `key`, importing it on first use.
async fn crypto_key(key: &PublicKey) -> Option<CryptoKey> {
    if let Some(imported) = KEYS.with(|keys| keys.borrow().get(key.thumbprint()).cloned()) {
        return Some(imported);
    }
    let promise = with_subtle(|subtle| {
        let params = EcKeyImportParams::new("ECDSA");
        params.set_named_curve("P-256");
        let raw = js_sys::Uint8Array::from(&key.to_sec1()[..]);
        let usages = js_sys::Array::of1(&JsValue::from_str("verify"));
        subtle.subtle.import_key_with_object("raw", &raw, &params, false, &usages)
    })?
    .ok()?;
    let imported = JsFuture::from(promise).await.ok()?;
    if !imported.is_object() {
        return None;
    }
    let imported: CryptoKey = imported.unchecked_into();
    KEYS.with(|keys| keys.borrow_mut().insert(key.thumbprint().to_owned(), imported.clone()));
    Some(imported)
}

/// Drops the imported keys that `keys` no longer holds (after a rotation).
pub(super) fn retain_only(keys: &KeySet) {
    let kept: Vec<&str> = keys.iter().map(|(_, key)| key.thumbprint()).collect();
    KEYS.with(|imported| imported.borrow_mut().retain(|thumbprint, _| kept.contains(&thumbprint.as_str())));
}

/// Verifies with `crypto.subtle.verify`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct WebCrypto;

impl AsyncEs256Verifier for WebCrypto {
    async fn verify_es256(&self, key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> bool {
        let Some(crypto_key) = crypto_key(key).await else {
            return false;
        };
        let Some(slot) = Slots::take() else {
            return false;
        };
        // Outside any borrow of the slots: `done` may run before `verify_into` returns.
        let started = with_subtle(|subtle| {
            DONE.with(|done| {
                let done = done.get_or_init(|| Closure::new(finish));
                verify_into(
                    &subtle.subtle,
                    &subtle.verify_params,
                    &crypto_key,
                    signature,
                    message,
                    slot,
                    done.as_ref(),
                );
            })
        });
        let verification = Verification { slot, finished: false };
        if started.is_none() {
            finish(slot, false);
        }
        verification.await
    }
}

// Awaiting `crypto.subtle.verify` through a `JsFuture` makes two wasm-bindgen closures per call;
// here one long-lived callback reports every verification into a slot, and the future waits on
// its slot. Measured in workerd, this is a few microseconds per request less.
#[wasm_bindgen(inline_js = r#"
export function verifyInto(subtle, params, key, signature, data, slot, done) {
  let verifying;
  try {
    verifying = subtle.verify(params, key, signature, data);
  } catch (error) {
    done(slot, false);
    return;
  }
  verifying.then((valid) => done(slot, valid === true), () => done(slot, false));
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = verifyInto)]
    fn verify_into(
        subtle: &SubtleCrypto,
        params: &EcdsaParams,
        key: &CryptoKey,
        signature: &[u8],
        data: &[u8],
        slot: u32,
        done: &JsValue,
    );
}

thread_local! {
    static SLOTS: RefCell<Slots> = RefCell::new(Slots::default());
    static DONE: OnceCell<Closure<dyn FnMut(u32, bool)>> = const { OnceCell::new() };
}

/// Where verifications under way leave their results.
#[derive(Default)]
struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

#[derive(Default)]
struct Slot {
    state: SlotState,
    result: Option<bool>,
    waker: Option<Waker>,
}

#[derive(Default, PartialEq, Eq)]
enum SlotState {
    #[default]
    Free,
    Waiting,
    /// Its future was dropped before the result came: freed when it comes.
    Abandoned,
}

impl Slots {
    /// A free slot, marked waiting.
    fn take() -> Option<u32> {
        SLOTS.with(|slots| {
            let mut slots = slots.borrow_mut();
            let index = match slots.free.pop() {
                Some(index) => index,
                None => {
                    slots.slots.push(Slot::default());
                    u32::try_from(slots.slots.len() - 1).ok()?
                }
            };
            let slot = slots.slots.get_mut(index as usize)?;
            *slot = Slot { state: SlotState::Waiting, result: None, waker: None };
            Some(index)
        })
    }

    fn release(&mut self, index: u32) {
        if let Some(slot) = self.slots.get_mut(index as usize) {
            *slot = Slot::default();
            self.free.push(index);
        }
    }
}

/// The callback: records the result and wakes the waiting future.
fn finish(index: u32, valid: bool) {
    let waker = SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        let slot = slots.slots.get_mut(index as usize)?;
        match slot.state {
            SlotState::Waiting if slot.result.is_none() => {
                slot.result = Some(valid);
                slot.waker.take()
            }
            SlotState::Abandoned => {
                slots.release(index);
                None
            }
            SlotState::Waiting | SlotState::Free => None,
        }
    });
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// Resolves to the result in its slot.
struct Verification {
    slot: u32,
    finished: bool,
}

impl Future for Verification {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<bool> {
        let index = self.slot;
        let result = SLOTS.with(|slots| {
            let mut slots = slots.borrow_mut();
            let Some(slot) = slots.slots.get_mut(index as usize) else {
                return Some(false);
            };
            match slot.result {
                Some(valid) => {
                    slots.release(index);
                    Some(valid)
                }
                None => {
                    if !slot.waker.as_ref().is_some_and(|waker| waker.will_wake(context.waker())) {
                        slot.waker = Some(context.waker().clone());
                    }
                    None
                }
            }
        });
        match result {
            Some(valid) => {
                self.finished = true;
                Poll::Ready(valid)
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for Verification {
    fn drop(&mut self) {
        if !self.finished {
            SLOTS.with(|slots| {
                let Ok(mut slots) = slots.try_borrow_mut() else {
                    return;
                };
                match slots.slots.get_mut(self.slot as usize) {
                    Some(slot) if slot.result.is_some() => slots.release(self.slot),
                    Some(slot) => {
                        slot.state = SlotState::Abandoned;
                        slot.waker = None;
                    }
                    None => {}
                }
            });
        }
    }
}
