"""The served-rows record: every answered row, its ground truth, and the live quality
computed from them (store backends, the writer thread, the settings)."""
