package storage

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// qcow2Header builds the first bytes of a qcow2 image.
func qcow2Header(version uint32, size uint64, backing bool, incompat uint64) []byte {
	h := make([]byte, 104)
	copy(h, qcow2Magic)
	binary.BigEndian.PutUint32(h[4:], version)
	if backing {
		binary.BigEndian.PutUint64(h[8:], 512)
	}
	binary.BigEndian.PutUint32(h[20:], 16)
	binary.BigEndian.PutUint64(h[24:], size)
	binary.BigEndian.PutUint64(h[72:], incompat)
	return h
}

// ova builds an OVA: a tar of the files given as name, content pairs.
func ova(files ...string) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for i := 0; i+1 < len(files); i += 2 {
		_ = tw.WriteHeader(&tar.Header{Name: files[i], Mode: 0o644, Size: int64(len(files[i+1]))})
		_, _ = tw.Write([]byte(files[i+1]))
	}
	_ = tw.Close()
	return b.Bytes()
}

const ovfWithDisk = `<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:id="file1" ovf:href="tiny-disk1.vmdk"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="%s" ovf:capacityAllocationUnits="%s"/>
    <Disk ovf:diskId="vmdisk2" ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^40"/>
  </DiskSection>
</Envelope>`

func TestCheckImageFormat(t *testing.T) {
	disk := func(capacity, units string) string {
		return strings.Replace(strings.Replace(ovfWithDisk, "%s", capacity, 1), "%s", units, 1)
	}
	tests := map[string]struct {
		data    []byte
		format  string
		want    ImageInfo
		errText string
	}{
		"qcow2":             {qcow2Header(3, 1<<30, false, 0), "QCOW2", ImageInfo{Format: "qcow2", VirtualSizeBytes: 1 << 30}, ""},
		"qcow2 v2":          {qcow2Header(2, 8<<20, false, 0), "qcow2", ImageInfo{Format: "qcow2", VirtualSizeBytes: 8 << 20}, ""},
		"html as qcow2":     {[]byte("<html><body>404 not found</body></html>"), "QCOW2", ImageInfo{}, "not QCOW2"},
		"empty as qcow2":    {nil, "QCOW2", ImageInfo{}, "not QCOW2"},
		"backing file":      {qcow2Header(3, 1<<30, true, 0), "QCOW2", ImageInfo{}, "backing file"},
		"external data":     {qcow2Header(3, 1<<30, false, 1<<2), "QCOW2", ImageInfo{}, "external file"},
		"version 9":         {qcow2Header(9, 1<<30, false, 0), "QCOW2", ImageInfo{}, "version 9"},
		"raw is anything":   {[]byte("whatever"), "RAW", ImageInfo{Format: "raw", VirtualSizeBytes: 8}, ""},
		"vhd not checked":   {[]byte("whatever"), "VHD", ImageInfo{Format: "raw", VirtualSizeBytes: 8}, ""},
		"raw that is qcow2": {qcow2Header(3, 1<<20, false, 0), "RAW", ImageInfo{Format: "qcow2", VirtualSizeBytes: 1 << 20}, ""},
		// An OVA's size is its first (boot) disk's capacity, not the archive's.
		"ova":               {ova("tiny.ovf", disk("64", "byte * 2^20"), "tiny-disk1.vmdk", "tiny"), "OVA", ImageInfo{Format: "raw", VirtualSizeBytes: 64 << 20}, ""},
		"ova, bytes":        {ova("tiny.mf", "SHA256(tiny.ovf)= 00", "tiny.ovf", disk("1048576", "byte")), "ova", ImageInfo{Format: "raw", VirtualSizeBytes: 1 << 20}, ""},
		"ova without ovf":   {ova("tiny-disk1.vmdk", "tiny"), "OVA", ImageInfo{}, "no .ovf descriptor"},
		"ova not a tar":     {[]byte("<html>404</html>"), "OVA", ImageInfo{}, "not an OVA"},
		"ova without disks": {ova("tiny.ovf", `<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"></Envelope>`), "OVA", ImageInfo{}, "names no disk"},
		"ova bad capacity":  {ova("tiny.ovf", disk("lots", "byte")), "OVA", ImageInfo{}, "no capacity"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := CheckImageFormat(bytes.NewReader(tc.data), int64(len(tc.data)), tc.format)
			if tc.errText != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("got %v, want invalid containing %q", err, tc.errText)
				}
				return
			}
			if err != nil || got.Format != tc.want.Format || got.VirtualSizeBytes != tc.want.VirtualSizeBytes {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
