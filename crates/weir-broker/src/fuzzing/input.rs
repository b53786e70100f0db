//! The cursor both fuzz inputs are read with: a byte string read front to back,
//! in which every read past the end yields zeros, so any input is a whole program.

/// A cursor over fuzz input that yields zeros once it runs out.
pub(super) struct Input<'a>(pub(super) &'a [u8]);

impl<'a> Input<'a> {
    pub(super) fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    pub(super) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub(super) fn bytes(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        taken
    }

    /// A string of up to 255 bytes (lossy UTF-8).
    pub(super) fn string(&mut self) -> String {
        let len = usize::from(self.u8());
        String::from_utf8_lossy(self.bytes(len)).into_owned()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
