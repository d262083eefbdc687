//! Raw pointer handling for the C API, kept in this one module.
//!
//! Every pointer that crosses the C boundary is checked here: NULL becomes
//! `CKR_ARGUMENTS_BAD`, CK_ULONG lengths are converted to `usize` with a check, and output
//! buffers follow the PKCS#11 two-call convention (section 5.2 of the v2.40 base
//! specification): a NULL buffer asks for the length, a short buffer gets
//! `CKR_BUFFER_TOO_SMALL` with the needed length written back.

use std::ptr;
use std::slice;

use cryptoki_sys::{CK_ATTRIBUTE, CK_EDDSA_PARAMS, CK_MECHANISM, CK_RSA_PKCS_PSS_PARAMS, CK_ULONG};
use keyrelay_protocol::MechanismParameter;

use crate::error::{Error, Result};

/// Converts a length received from the caller.
pub(crate) fn to_usize(len: CK_ULONG) -> Result<usize> {
    usize::try_from(len).map_err(|_| Error::ArgumentsBad("length does not fit in memory"))
}

/// Converts a length to return to the caller.
pub(crate) fn to_ulong(len: usize) -> CK_ULONG {
    // CK_ULONG is at least as wide as usize on every supported target.
    len as CK_ULONG
}

/// Borrows `len` bytes at `data`. A NULL pointer is accepted only with a zero length.
///
/// # Safety
/// `data` must be NULL or valid for reads of `len` bytes for the returned lifetime.
pub(crate) unsafe fn input<'a>(data: *const u8, len: CK_ULONG) -> Result<&'a [u8]> {
    let len = to_usize(len)?;
    if data.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(Error::ArgumentsBad("NULL input buffer"))
        };
    }
    // SAFETY: the caller guarantees `data` is valid for `len` bytes, and it is not NULL.
    Ok(unsafe { slice::from_raw_parts(data, len) })
}

/// Borrows a caller buffer of `len` bytes for writing. NULL is accepted only when empty.
///
/// # Safety
/// `data` must be NULL or valid for writes of `len` bytes for the returned lifetime.
pub(crate) unsafe fn output<'a>(data: *mut u8, len: CK_ULONG) -> Result<&'a mut [u8]> {
    let len = to_usize(len)?;
    if data.is_null() {
        return if len == 0 {
            Ok(&mut [])
        } else {
            Err(Error::ArgumentsBad("NULL buffer"))
        };
    }
    // SAFETY: the caller guarantees `data` is valid for writes of `len` bytes.
    Ok(unsafe { slice::from_raw_parts_mut(data, len) })
}

/// Borrows a mutable reference to a caller-owned value, rejecting NULL.
///
/// # Safety
/// `out` must be NULL or point to a valid, writable `T` for the returned lifetime.
pub(crate) unsafe fn out<'a, T>(out: *mut T) -> Result<&'a mut T> {
    // SAFETY: the caller guarantees a non-NULL `out` is valid and writable.
    unsafe { out.as_mut() }.ok_or(Error::ArgumentsBad("NULL output pointer"))
}

/// Writes `value` into a caller buffer by the two-call convention.
///
/// With `buffer` NULL, only the length is stored in `len`. With a buffer shorter than
/// `value`, the needed length is stored and `Error::BufferTooSmall` returned.
///
/// # Safety
/// `len` must be valid for reads and writes. A non-NULL `buffer` must be valid for writes
/// of `*len` bytes.
pub(crate) unsafe fn write_sized(value: &[u8], buffer: *mut u8, len: *mut CK_ULONG) -> Result<()> {
    // SAFETY: the caller guarantees `len` is NULL or valid.
    let len = unsafe { out(len) }?;
    let capacity = to_usize(*len)?;
    *len = to_ulong(value.len());
    if buffer.is_null() {
        return Ok(());
    }
    if capacity < value.len() {
        return Err(Error::BufferTooSmall);
    }
    // SAFETY: `buffer` is valid for `capacity >= value.len()` bytes and cannot overlap the
    // module-owned `value`.
    unsafe { ptr::copy_nonoverlapping(value.as_ptr(), buffer, value.len()) };
    Ok(())
}

/// Writes CK_ULONG items into a caller array by the two-call convention.
///
/// # Safety
/// As [`write_sized`], with `buffer` valid for `*count` items.
pub(crate) unsafe fn write_list(
    items: &[CK_ULONG],
    buffer: *mut CK_ULONG,
    count: *mut CK_ULONG,
) -> Result<()> {
    // SAFETY: the caller guarantees `count` is NULL or valid.
    let count = unsafe { out(count) }?;
    let capacity = to_usize(*count)?;
    *count = to_ulong(items.len());
    if buffer.is_null() {
        return Ok(());
    }
    if capacity < items.len() {
        return Err(Error::BufferTooSmall);
    }
    // SAFETY: `buffer` is valid for `capacity >= items.len()` items and is caller-owned.
    unsafe { ptr::copy_nonoverlapping(items.as_ptr(), buffer, items.len()) };
    Ok(())
}

/// Borrows an attribute template of `count` entries. NULL is accepted only when empty.
///
/// # Safety
/// `template` must be NULL or valid for reads and writes of `count` entries.
pub(crate) unsafe fn template<'a>(
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> Result<&'a mut [CK_ATTRIBUTE]> {
    let count = to_usize(count)?;
    if template.is_null() {
        return if count == 0 {
            Ok(&mut [])
        } else {
            Err(Error::ArgumentsBad("NULL template"))
        };
    }
    // SAFETY: the caller guarantees `template` is valid for `count` entries.
    Ok(unsafe { slice::from_raw_parts_mut(template, count) })
}

/// Returns the value bytes a template entry points to, for matching in C_FindObjectsInit.
pub(crate) fn attribute_value(attribute: &CK_ATTRIBUTE) -> Result<&[u8]> {
    // SAFETY: a template entry's pValue is valid for ulValueLen bytes by the C_FindObjectsInit
    // contract, and the entry itself was borrowed through `template`.
    unsafe { input(attribute.pValue as *const u8, attribute.ulValueLen) }
}

/// The C structure a mechanism's parameter must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParameterKind {
    /// No parameter: pParameter must be NULL.
    None,
    /// CK_RSA_PKCS_PSS_PARAMS.
    RsaPss,
    /// CK_EDDSA_PARAMS, or NULL for plain Ed25519.
    Eddsa,
}

/// A mechanism parameter read from C, before the mechanism itself is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Parameter {
    /// Read successfully.
    Valid(MechanismParameter),
    /// Present with the wrong length, or present where the mechanism takes none.
    Invalid,
}

/// Reads the parameter of `mechanism`, expected to have the structure `kind`.
///
/// # Safety
/// `mechanism.pParameter` must be NULL or valid for `ulParameterLen` bytes, and pointers
/// inside the structure must be valid for the lengths they give.
pub(crate) unsafe fn mechanism_parameter(
    mechanism: &CK_MECHANISM,
    kind: ParameterKind,
) -> Result<Parameter> {
    let pointer = mechanism.pParameter;
    let len = to_usize(mechanism.ulParameterLen)?;
    if pointer.is_null() {
        return Ok(match kind {
            ParameterKind::RsaPss => Parameter::Invalid,
            _ => Parameter::Valid(MechanismParameter::None),
        });
    }
    match kind {
        ParameterKind::RsaPss if len == size_of::<CK_RSA_PKCS_PSS_PARAMS>() => {
            // SAFETY: the caller guarantees `pointer` is valid for `len` bytes, which is the
            // structure's size; read_unaligned tolerates any alignment.
            let params = unsafe { pointer.cast::<CK_RSA_PKCS_PSS_PARAMS>().read_unaligned() };
            Ok(Parameter::Valid(MechanismParameter::RsaPss {
                hash: params.hashAlg.into(),
                mgf: params.mgf.into(),
                salt_len: params.sLen.into(),
            }))
        }
        ParameterKind::Eddsa if len == size_of::<CK_EDDSA_PARAMS>() => {
            // SAFETY: as above, for CK_EDDSA_PARAMS.
            let params = unsafe { pointer.cast::<CK_EDDSA_PARAMS>().read_unaligned() };
            // SAFETY: the caller guarantees the context pointer is valid for its length.
            let context = unsafe { input(params.pContextData, params.ulContextDataLen) }?;
            Ok(Parameter::Valid(MechanismParameter::Eddsa {
                prehash: params.phFlag != 0,
                context: context.to_vec(),
            }))
        }
        _ if len == 0 && kind == ParameterKind::None => {
            Ok(Parameter::Valid(MechanismParameter::None))
        }
        _ => Ok(Parameter::Invalid),
    }
}

/// Borrows a NUL-terminated C string's bytes, without the NUL, or `None` for NULL.
///
/// # Safety
/// `text` must be NULL or point to a NUL-terminated string valid for the returned lifetime.
pub(crate) unsafe fn c_string<'a>(text: *const u8) -> Option<&'a [u8]> {
    if text.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller.
    Some(unsafe { std::ffi::CStr::from_ptr(text.cast()) }.to_bytes())
}

/// Copies `text` into a fixed-size PKCS#11 string field, blank-padded, never NUL-terminated.
///
/// Text longer than the field is cut at a UTF-8 character boundary.
pub(crate) fn pad(field: &mut [u8], text: &str) {
    field.fill(b' ');
    let mut end = text.len().min(field.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    field[..end].copy_from_slice(&text.as_bytes()[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_blank_fills() {
        let mut field = [0u8; 8];
        pad(&mut field, "abc");
        assert_eq!(&field, b"abc     ");
    }

    #[test]
    fn pad_cuts_at_char_boundary() {
        let mut field = [0u8; 4];
        pad(&mut field, "abcé");
        assert_eq!(&field, b"abc ");
    }

    #[test]
    fn write_sized_reports_length_for_null_buffer() {
        let mut len: CK_ULONG = 0;
        // SAFETY: `len` is a valid local and the buffer is NULL.
        unsafe { write_sized(&[1, 2, 3], ptr::null_mut(), &mut len) }.unwrap();
        assert_eq!(len, 3);
    }

    #[test]
    fn write_sized_rejects_short_buffer() {
        let mut buffer = [0u8; 2];
        let mut len: CK_ULONG = 2;
        // SAFETY: `buffer` has room for `len` bytes.
        let result = unsafe { write_sized(&[1, 2, 3], buffer.as_mut_ptr(), &mut len) };
        assert!(matches!(result, Err(Error::BufferTooSmall)));
        assert_eq!(len, 3);
        assert_eq!(buffer, [0, 0]);
    }

    #[test]
    fn write_sized_copies_into_large_buffer() {
        let mut buffer = [0u8; 4];
        let mut len: CK_ULONG = 4;
        // SAFETY: `buffer` has room for `len` bytes.
        unsafe { write_sized(&[1, 2, 3], buffer.as_mut_ptr(), &mut len) }.unwrap();
        assert_eq!(len, 3);
        assert_eq!(buffer, [1, 2, 3, 0]);
    }

    #[test]
    fn input_rejects_null_with_length() {
        // SAFETY: a NULL pointer is never read.
        let result = unsafe { input(ptr::null(), 4) };
        assert!(matches!(result, Err(Error::ArgumentsBad(_))));
    }
}
