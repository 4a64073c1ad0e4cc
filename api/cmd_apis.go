package api

import (
	"github.com/nimbus-cloud/nimbus/api/cserr"
)

func init() {
	Register(&Command{
		Name:        "listApis",
		Description: "Lists the APIs the caller may call, with their parameters and response fields",
		Access:      AccessAll,
		Params: []Param{
			{Name: "name", Type: TString, Description: "describe only the API of this name"},
		},
		ResponseName: "api",
		Response: []Field{
			{"name", "string", "the name of the API"},
			{"description", "string", "the description of the API"},
			{"isasync", "boolean", "true if the API is asynchronous (answers a job id)"},
			{"related", "string", "comma-separated related APIs"},
			{"since", "string", "the version that added the API"},
			{"params", "set", "the API's parameters: name, description, type, length, required, since"},
			{"response", "set", "the API's response fields: name, description, type"},
		},
		Since:   "4.1.0",
		Handler: listApis,
	})
}

// APIView is one API as listApis describes it (cloudstack-go's Api; cmk
// reads name, description, isasync, params[].name/type/required/description
// and needs each of them present with its JSON type).
type APIView struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	IsAsync     bool            `json:"isasync"`
	Related     string          `json:"related"`
	Since       string          `json:"since,omitempty"`
	Params      []APIParamView  `json:"params"`
	Response    []APIFieldsView `json:"response"`
}

// APIParamView is one parameter of an API.
type APIParamView struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Type        string `json:"type"`
	Length      int    `json:"length"`
	Required    bool   `json:"required"`
	Since       string `json:"since,omitempty"`
}

// APIFieldsView is one response field of an API.
type APIFieldsView struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Type        string `json:"type"`
}

// DescribeAPI builds a command's listApis entry from its declaration.
func DescribeAPI(cmd *Command) APIView {
	v := APIView{
		Name: cmd.Name, Description: cmd.Description, IsAsync: cmd.Async, Since: cmd.Since,
		Params: make([]APIParamView, 0, len(cmd.Params)), Response: make([]APIFieldsView, 0, len(cmd.Response)),
	}
	for _, p := range cmd.Params {
		length := p.Length
		if length == 0 {
			length = 255
		}
		v.Params = append(v.Params, APIParamView{Name: p.Name, Description: p.Description, Type: string(p.Type),
			Length: length, Required: p.Required, Since: p.Since})
	}
	for _, f := range cmd.Response {
		v.Response = append(v.Response, APIFieldsView{Name: f.Name, Description: f.Description, Type: f.Type})
	}
	if cmd.Async {
		v.Response = append(v.Response,
			APIFieldsView{Name: "jobid", Description: "the ID of the asynchronous job; poll it with queryAsyncJobResult", Type: "string"},
			APIFieldsView{Name: "jobstatus", Description: "the status of the asynchronous job", Type: "integer"})
	}
	return v
}

// mayCall tells whether the caller may call cmd (commands without
// authentication, such as login, are open to everyone).
func (c *Call) mayCall(cmd *Command) bool {
	return cmd.NoAuth || c.S.allowed(c.Ctx, c.Caller, cmd)
}

func listApis(c *Call) (any, error) {
	if name := c.Str("name"); name != "" {
		cmd := Lookup(name)
		if cmd == nil || !c.mayCall(cmd) {
			return nil, cserr.Param("API %s does not exist or is not available for the caller", clip(name, 64))
		}
		return List{Key: "api", Count: 1, Items: []APIView{DescribeAPI(cmd)}}, nil
	}
	var out []APIView
	for _, cmd := range Commands() {
		if c.mayCall(cmd) {
			out = append(out, DescribeAPI(cmd))
		}
	}
	return List{Key: "api", Count: len(out), Items: out}, nil
}
