package api

import (
	"encoding/json"
	"strings"
)

// sdkReadsTopLevel lists the sync commands whose cloudstack-go method
// decodes the answer's top level instead of the entity under its key (the
// SDK's generator leaves getRawValue out for them, so against CloudStack it
// reads zero values). Handlers answer CloudStack's shape, Object{"zone": v};
// for these commands the server adds the entity's fields beside the key, so
// both CloudStack's clients and the SDK read the answer. The list comes
// from cloudstack-go v2.16.1's services, intersected with what Nimbus serves.
var sdkReadsTopLevel = map[string]bool{
	"configureoutofbandmanagement": true,
	"createsecondarystagingstore":  true,
	"createsnapshotpolicy":         true,
	"enableaccount":                true,
	"recovervirtualmachine":        true,
	"resetconfiguration":           true,
	"updateaccount":                true,
	"updatediskoffering":           true,
	"updatehost":                   true,
	"updateiso":                    true,
	"updatepod":                    true,
	"updateresourcelimit":          true,
	"updaterole":                   true,
	"updatesnapshotpolicy":         true,
	"updatestoragepool":            true,
	"updatetemplate":               true,
	"updateuser":                   true,
	"updatevirtualmachine":         true,
	"updatezone":                   true,
}

// sdkCompat applies sdkReadsTopLevel to a handler's answer.
func sdkCompat(command string, out any) any {
	o, ok := out.(Object)
	if !ok || len(o) != 1 || !sdkReadsTopLevel[strings.ToLower(command)] {
		return out
	}
	for key, entity := range o {
		b, err := json.Marshal(entity)
		if err != nil {
			return out
		}
		var fields map[string]json.RawMessage
		if json.Unmarshal(b, &fields) != nil {
			return out // not an object: nothing to lift
		}
		both := make(Object, len(fields)+1)
		for k, v := range fields {
			both[k] = v
		}
		both[key] = entity
		return both
	}
	return out
}
