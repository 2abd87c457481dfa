//! Fuzz target: callback authentication (`Sign` = MD5(SignKey + T)) never panics on any key,
//! sign, `T` or clock, accepts what the key itself signed while `T` has not passed, and refuses
//! a signature that differs from it (surrounding whitespace aside).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vodbridge_tencent::SignKey;

fuzz_target!(|input: (String, String, i64, i64, i64)| {
    let (key, sign, t, now, skew) = input;
    let key = SignKey::new(key);
    let _ = key.verify(&sign, t, now, skew);
    let good = key.sign(t);
    let skew = skew.rem_euclid(3600);
    if now <= t {
        assert!(
            key.verify(&good, t, now, skew).is_ok(),
            "its own signature refused"
        );
        assert!(
            key.verify(&good.to_uppercase(), t, now, skew).is_ok(),
            "hex case matters"
        );
    }
    if !sign.trim().eq_ignore_ascii_case(&good) {
        assert!(
            key.verify(&sign, t, now, skew).is_err(),
            "a wrong signature accepted"
        );
    }
});
