package api

// SSHInfo is how to reach a VM's sshd: GET /v1/vms/{name}/ssh.
type SSHInfo struct {
	Name string `json:"name"`
	IP   string `json:"ip"`
	Port int    `json:"port"`
	User string `json:"user"`
	// HostKey is the VM's public host key (an authorized_keys line) that
	// banger generated at creation; clients pin it.
	HostKey string `json:"host_key"`
}

// WorkspaceResult answers PUT /v1/vms/{name}/workspace.
type WorkspaceResult struct {
	Dir string `json:"dir"` // where the workspace landed in the guest
}
