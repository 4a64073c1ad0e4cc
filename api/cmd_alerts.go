package api

import (
	"github.com/nimbus-cloud/nimbus/models"
)

func init() {
	Register(&Command{
		Name: "listAlerts", Description: "Lists operator alerts (capacity thresholds crossed, ...), newest first", Access: AccessRootAdmin,
		Params: append(ListParams(),
			Param{Name: "id", Type: TUUID, Description: "the alert"},
			Param{Name: "name", Type: TString, Description: "alerts of this name (e.g. cluster.cpu:<cluster uuid>)"},
			Param{Name: "type", Type: TInteger, Description: "alerts of this type (0 memory, 1 CPU, 3 allocated storage, ...)"},
		),
		ResponseName: "alert", Response: []Field{
			{"id", "string", "the alert"}, {"type", "integer", "CloudStack's alert type"}, {"name", "string", "what it is about"},
			{"description", "string", "the alert's text"}, {"sent", "date", "when it was raised"},
			{"resolved", "date", "when it was resolved (absent while it holds)"},
		},
		Handler: listAlerts,
	})
}

// AlertView is one alert (the SDK's Alert).
type AlertView struct {
	ID          string `json:"id"`
	Type        int    `json:"type"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Sent        string `json:"sent"`
	Resolved    string `json:"resolved,omitempty"`
}

func listAlerts(c *Call) (any, error) {
	var alerts []models.Alert
	q := c.S.DB.NewSelect().Model(&alerts).Where("alert.archived = ?", false)
	if c.Has("type") {
		q = q.Where("alert.type = ?", c.Int("type", 0))
	}
	q = c.Filtered(q, Filter{ID: "alert.uuid", Name: "alert.name", Keyword: []string{"alert.subject"}}).Order("alert.id DESC")
	n, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	views := make([]AlertView, 0, len(alerts))
	for _, a := range alerts {
		views = append(views, AlertView{ID: a.UUID, Type: a.Type, Name: a.Name, Description: a.Subject, Sent: FormatTime(a.Created), Resolved: FormatTime(a.Resolved)})
	}
	return List{Key: "alert", Count: n, Items: views}, nil
}
