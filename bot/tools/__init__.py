"""What the tools under a result compute, apart from Discord: the outpainting canvas of Zoom
out, pan and Make square (`canvas`), the requests those buttons and Hi-res make
(`result_tools`), and the contact sheet of a grid or a studio's gallery (`contact_sheet`)."""
