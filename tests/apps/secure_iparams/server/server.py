def h(p):
    print("token is", p["iparams"]["token"])
    if p["data"].get("fail"):
        raise ValueError("bad " + p["iparams"]["token"])
    return {"t": p["iparams"]["token"], "n": p["iparams"]["name"]}
