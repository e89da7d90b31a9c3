//! Arbitrary bytes as the remote's handshake message at each of the three steps: never a
//! panic, and nothing but the genuine message completes a step.
#![no_main]

use hypercore_protocol::noise::Handshake;
use hypercore_protocol::NoiseKeyPair;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, message)) = data.split_first() else {
        return;
    };
    let kp = || NoiseKeyPair::from_secret([7; 32]);
    let mut i = Handshake::with_fixed(true, &kp(), [1; 24], Some([2; 32])).unwrap();
    let mut r = Handshake::with_fixed(false, &kp(), [3; 24], Some([4; 32])).unwrap();
    let strip = |m: Vec<u8>| m[1..].to_vec();
    match step % 3 {
        0 => {
            let _ = r.read(message);
        }
        1 => {
            let m1 = strip(i.write().unwrap());
            r.read(&m1).unwrap();
            let _ = i.read(message);
            let _ = i.write();
        }
        _ => {
            let m1 = strip(i.write().unwrap());
            r.read(&m1).unwrap();
            let m2 = strip(r.write().unwrap());
            i.read(&m2).unwrap();
            let m3 = strip(i.write().unwrap());
            if r.read(message).is_ok() {
                assert_eq!(message, &m3[..], "a forged third message was accepted");
                let _ = r.finish();
            }
        }
    }
});
