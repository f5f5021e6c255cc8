%% What `erl -eval` runs: read upgradectl_otp.erl from stdin, compile it, run its main/2 with
%% the plain arguments (after -extra). upgradectl_otp.erl goes through no preprocessor. It runs
%% once, for a moment: no_ssa_opt skips the optimisation passes, a quarter of a step's CPU.
%% Compiling is most of a step's CPU: the .beam is kept in the user's own cache directory
%% (~/.cache/upgradectl: code loaded into the node must come from where no other user writes),
%% named by the md5 of the source and of this Erlang's version, written whole then renamed; one
%% that does not load is compiled again, and one that cannot be written is not kept.
Read = fun R(Acc) -> case io:get_chars('', 65536) of eof -> lists:append(lists:reverse(Acc)); Data when is_list(Data) -> R([Data | Acc]) end end,
Source = Read([]),
Forms = fun F([], [], Done) -> lists:reverse(Done); F([{dot, _} = Dot | Rest], Form, Done) -> {ok, Parsed} = erl_parse:parse_form(lists:reverse([Dot | Form])), F(Rest, [], [Parsed | Done]); F([Token | Rest], Form, Done) -> F(Rest, [Token | Form], Done) end,
Compile = fun() -> {ok, Tokens, _} = erl_scan:string(Source, 1), {ok, upgradectl_otp, Compiled} = compile:forms(Forms(Tokens, [], []), [binary, return_errors, no_ssa_opt]), Compiled end,
Load = fun(Beam) -> code:load_binary(upgradectl_otp, "upgradectl_otp.erl", Beam) end,
Key = erlang:md5(term_to_binary([Source, erlang:system_info(otp_release), erlang:system_info(version)])),
Cache = try filename:join(filename:basedir(user_cache, "upgradectl"), lists:flatten(["upgradectl_otp-", [io_lib:format("~2.16.0b", [Byte]) || <<Byte>> <= Key], ".beam"])) catch error:_ -> none end,
Keep = fun(_) when Cache =:= none -> false; (Beam) -> Partial = Cache ++ "." ++ os:getpid() ++ ".partial", filelib:ensure_dir(Cache) =:= ok andalso file:write_file(Partial, Beam) =:= ok andalso file:rename(Partial, Cache) =:= ok end,
Fresh = fun() -> Compiled = Compile(), {module, upgradectl_otp} = Load(Compiled), Keep(Compiled), Compiled end,
Bin = case Cache =/= none andalso file:read_file(Cache) of {ok, Cached} -> case Load(Cached) of {module, upgradectl_otp} -> Cached; _ -> Fresh() end; _ -> Fresh() end,
upgradectl_otp:main(Bin, init:get_plain_arguments()).
