package bmclib

import (
	"context"
	"errors"
	"net"
	"time"
)

// asfPing is an RMCP/ASF presence ping (DMTF DSP0136): every IPMI-over-LAN
// BMC answers it without credentials, so it tells a BMC that refuses a
// session from one that is not there.
var asfPing = []byte{
	0x06, 0x00, 0xff, 0x06, // RMCP v1.0, no ack, class ASF
	0x00, 0x00, 0x11, 0xbe, // ASF IANA enterprise number
	0x80, 0x4e, 0x00, 0x00, // presence ping, tag, reserved, no data
}

// ipmiPing sends presence pings to a BMC's UDP address until one is
// answered with a pong or ctx ends.
func ipmiPing(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	buf := make([]byte, 512)
	for {
		if _, err := conn.Write(asfPing); err != nil {
			return err
		}
		wait := time.Now().Add(500 * time.Millisecond)
		if dl, ok := ctx.Deadline(); ok && dl.Before(wait) {
			wait = dl
		}
		_ = conn.SetReadDeadline(wait)
		n, err := conn.Read(buf)
		if err == nil && n >= 9 && buf[0] == 0x06 && buf[3] == 0x06 && buf[8] == 0x40 {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			// ICMP port unreachable surfaces as a read error: wait a little
			// and try again until ctx ends.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}
