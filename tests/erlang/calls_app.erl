%% The application of the test release `calls`: its supervisor is call_sup.
-module(calls_app).
-behaviour(application).
-export([start/2, stop/1]).

start(_Type, _Args) -> call_sup:start_link().

stop(_State) -> ok.
