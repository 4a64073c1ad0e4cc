package storage

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// ImageInfo is what an image's header says.
type ImageInfo struct {
	Format           string // qcow2, or raw when the header is no known container
	VirtualSizeBytes int64  // the disk size a guest sees (the file size for raw)
	BackingFile      bool   // a qcow2 naming a backing file
	ExternalData     bool   // a qcow2 keeping its data in another file
}

var qcow2Magic = []byte{'Q', 'F', 'I', 0xfb}

// ReadImageInfo reads the header of an image of size bytes.
func ReadImageInfo(r io.ReaderAt, size int64) (ImageInfo, error) {
	info := ImageInfo{Format: "raw", VirtualSizeBytes: size}
	hdr := make([]byte, 80)
	n, err := r.ReadAt(hdr, 0)
	if err != nil && err != io.EOF {
		return info, err
	}
	hdr = hdr[:n]
	if len(hdr) < 72 || !bytes.Equal(hdr[:4], qcow2Magic) {
		return info, nil
	}
	version := binary.BigEndian.Uint32(hdr[4:8])
	info.Format = "qcow2"
	info.VirtualSizeBytes = int64(binary.BigEndian.Uint64(hdr[24:32]))
	info.BackingFile = binary.BigEndian.Uint64(hdr[8:16]) != 0
	info.ExternalData = version >= 3 && len(hdr) >= 80 && binary.BigEndian.Uint64(hdr[72:80])&(1<<2) != 0
	if version < 2 || version > 3 || info.VirtualSizeBytes <= 0 {
		return info, hypervisor.NewError(ErrInvalid, "a qcow2 header of version %d and size %d is not one QEMU reads", version, info.VirtualSizeBytes)
	}
	return info, nil
}

// CheckImageFormat checks an image against the format it was registered
// with, as CloudStack's secondary storage does after a download: a QCOW2
// must be a qcow2 standing alone (no backing or external data file, which
// would let a guest read the host's files). Other formats are not checked
// here; the hypervisor's pool driver checks what it takes.
func CheckImageFormat(r io.ReaderAt, size int64, format string) (ImageInfo, error) {
	info, err := ReadImageInfo(r, size)
	if err != nil {
		return info, err
	}
	if strings.EqualFold(format, "ova") {
		info.VirtualSizeBytes, err = ovaDiskSize(r, size)
		return info, err
	}
	if !strings.EqualFold(format, "qcow2") {
		return info, nil
	}
	switch {
	case info.Format != "qcow2":
		return info, hypervisor.NewError(ErrInvalid, "the image is not QCOW2: its %d bytes have no qcow2 header", size)
	case info.BackingFile:
		return info, hypervisor.NewError(ErrInvalid, "the QCOW2 image names a backing file; flatten it first (qemu-img convert -O qcow2)")
	case info.ExternalData:
		return info, hypervisor.NewError(ErrInvalid, "the QCOW2 image keeps its data in an external file")
	}
	return info, nil
}
