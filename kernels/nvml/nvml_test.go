package nvml

import "testing"

func TestCUDAVersionString(t *testing.T) {
	for v, want := range map[int]string{12040: "12.4", 11080: "11.8", 13000: "13.0", 12090: "12.9", 0: "unknown", -1: "unknown"} {
		if got := CUDAVersionString(v); got != want {
			t.Errorf("CUDAVersionString(%d) = %q, want %q", v, got, want)
		}
	}
}

func TestWithLibraryPath(t *testing.T) {
	if o := applyOptions(nil); o.library != DefaultLibrary {
		t.Errorf("default library %q, want %q", o.library, DefaultLibrary)
	}
	if o := applyOptions([]Option{WithLibraryPath("/x/libnvidia-ml.so.1")}); o.library != "/x/libnvidia-ml.so.1" {
		t.Errorf("WithLibraryPath: library %q", o.library)
	}
	if o := applyOptions([]Option{WithLibraryPath("")}); o.library != DefaultLibrary {
		t.Errorf("WithLibraryPath(\"\"): library %q, want the default", o.library)
	}
}
